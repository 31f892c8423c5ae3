"""Concurrent callers share batches; repeated texts come from the cache; failures reach all."""

import asyncio
import threading

import numpy as np
import pytest

from serve_app.encoding.batcher import BatchingEncoder


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.gate = threading.Event()

    def __call__(self, texts):
        self.gate.wait(5)
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("model down")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


async def test_waiting_callers_join_one_batch_and_get_their_own_vectors():
    rec = Recorder()
    enc = BatchingEncoder(rec, max_batch=8)
    first = asyncio.create_task(enc.encode(["a"]))
    await asyncio.sleep(0.05)  # the first call is in the thread, blocked on the gate
    rest = [asyncio.create_task(enc.encode(["b" * n])) for n in range(2, 6)]
    await asyncio.sleep(0.05)
    rec.gate.set()
    out = await asyncio.gather(first, *rest)
    assert rec.calls == [["a"], ["bb", "bbb", "bbbb", "bbbbb"]]
    assert [float(v[0][0]) for v in out] == [1, 2, 3, 4, 5]


async def test_cache_and_duplicates():
    rec = Recorder()
    rec.gate.set()
    enc = BatchingEncoder(rec, cache_size=2)
    a1, a2 = await enc.encode(["aa", "aa"])
    assert rec.calls == [["aa"]] and np.array_equal(a1, a2)
    await enc.encode(["aa"])
    assert len(rec.calls) == 1 and enc.stats["cache_hits"] == 1
    await enc.encode(["b", "c"])  # evicts "aa"
    await enc.encode(["aa"])
    assert rec.calls[-1] == ["aa"]


async def test_a_failure_reaches_every_waiter_and_the_next_call_works():
    rec = Recorder(fail=True)
    rec.gate.set()
    enc = BatchingEncoder(rec)
    results = await asyncio.gather(enc.encode(["x"]), enc.encode(["y"]), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    rec.fail = False
    [v] = await enc.encode(["zz"])
    assert float(v[0]) == 2.0
    with pytest.raises(RuntimeError):
        rec.fail = True
        await enc.encode(["new"])
