"""Intake and the topic cut shared by the worker and re-extraction."""

from __future__ import annotations

import asyncio

import numpy as np

from serve_app.pipeline.intake import VectorCache
from tests.unit.ingest.doubles import bag_of_words


def test_vector_cache_survives_eviction_by_a_concurrent_call():
    """Regression: a text found cached before an await was evicted by a concurrent call that
    filled the cache meanwhile (KeyError seen at 10k messages, 4 sessions in parallel)."""
    cache = VectorCache(size=4)
    calls: list[list[str]] = []

    async def embed(texts: list[str]):
        calls.append(list(texts))
        await asyncio.sleep(0.01 if "slow" in texts[0] else 0)
        return [bag_of_words(t) for t in texts]

    async def run() -> tuple[np.ndarray, np.ndarray]:
        await cache.embed(["a"], embed)
        return await asyncio.gather(
            cache.embed(["a", "slow"], embed),  # "a" cached, "slow" awaited
            cache.embed([f"t{i}" for i in range(8)], embed),  # evicts "a" meanwhile
        )

    first, second = asyncio.run(run())
    assert np.allclose(first[0], bag_of_words("a")) and np.allclose(first[1], bag_of_words("slow"))
    assert second.shape[0] == 8
    assert ["a"] not in calls[1:]  # the cached vector was used, not embedded again
    assert len(cache._data) <= 4
