"""The in-process search baseline finds the service's vector shard and runs every strategy over
it (here on a Qdrant Edge store written the way MemoryIndex writes it)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from benchmarks.search_latency import STRATEGIES, Scenario, baseline
from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vectors import VectorPoint

DIM = 8


class _Vectors:
    """Stands in for MiniLM: fixed random unit vectors (the baseline only needs .encode/.dim)."""

    dim = DIM

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def encode(self, texts):
        v = self.rng.normal(size=(len(texts), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


async def _write_store(path, base: str, users: list[str], n: int) -> dict[str, list]:
    store = EdgeVectorStore(path, base, DIM)
    vecs = _Vectors()
    docs: dict[str, list] = {}
    for u in users:
        ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(n)]
        texts = [f"{u} went hiking in the Alps on day {i}" for i in range(n)]
        await store.upsert(
            [
                VectorPoint(i, v, u, "s0", datetime(2023, 5, 1, tzinfo=UTC), "ana")
                for i, v in zip(ids, vecs.encode(texts), strict=True)
            ]
        )
        docs[u] = list(zip(ids, texts, strict=True))
    await store.close()
    return docs


async def test_baseline_runs_every_strategy_on_the_service_layout(tmp_path):
    users = ["bench-u1", "bench-u2"]
    # An index generation suffix on the base, as MemoryIndex may use.
    docs = await _write_store(tmp_path / "vectors", "memserve_g1", users, 30)
    sc = Scenario("2 users x 30", users, 30, vectors_copy=tmp_path / "vectors", docs=docs)
    rows = await baseline(sc, _Vectors(), ["where did they go hiking?"], 6)
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    for r in rows:
        assert r["scenario"] == "2 users x 30"
        assert r["latency_ms"]["n"] == 6
        assert r["throughput_rps"] > 0
