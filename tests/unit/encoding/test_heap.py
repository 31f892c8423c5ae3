"""The heap release that keeps torch replicas from growing with every new batch shape."""

import sys

import pytest

from serve_app.encoding import heap
from serve_app.encoding.torch_encoder import Embedder
from serve_app.pipeline.compression import Compressor


def test_releasing_heap_releases_after_the_call_even_when_it_raises(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "release_freed_heap", lambda: calls.append("trim"))

    @heap.releasing_heap
    def forward(x: int) -> int:
        calls.append("forward")
        if x < 0:
            raise ValueError(x)
        return x * 2

    assert forward(3) == 6 and calls == ["forward", "trim"]
    with pytest.raises(ValueError):
        forward(-1)
    assert calls == ["forward", "trim", "forward", "trim"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_trim_is_found_and_runs():
    assert heap.release_freed_heap() is True


def test_every_model_forward_pass_releases_the_heap():
    wrapped = [Embedder.encode, Compressor.compress_batch, Compressor.sentence_attention_batch]
    assert all(getattr(f, "__wrapped__", None) is not None for f in wrapped)


async def test_release_periodically_releases_until_cancelled(monkeypatch):
    import asyncio

    calls = []
    monkeypatch.setattr(heap, "release_freed_heap", lambda: calls.append(1))
    task = asyncio.create_task(heap.release_periodically(0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    n = len(calls)
    await asyncio.sleep(0.05)
    assert n >= 3 and len(calls) == n
