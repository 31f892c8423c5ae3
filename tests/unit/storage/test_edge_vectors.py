"""Qdrant Edge beyond the shared calls (tests/unit/storage/test_vectors_congruence.py): reopening
a shard, user scoping of writes, generations beside each other, and the dimension check."""

import asyncio
import uuid

import numpy as np
import pytest

from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vectors import VectorPoint
from tests.unit.storage.test_vectors_congruence import DIM, T0, _points, assert_ranked


async def test_survives_reopen_and_keeps_users_apart(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM)
    pts = _points()
    await store.upsert(pts)
    await store.close()
    again = EdgeVectorStore(tmp_path, "t", DIM)
    assert await again.count("alice") == 30
    # An id of bob's point deleted "as alice" stays: deletes are scoped to the user.
    await again.delete("alice", [pts[1].id])
    assert await again.count("bob") == 30
    got = await again.retrieve_vectors("alice", [pts[0].id, pts[1].id])
    assert list(got) == [pts[0].id]
    # Cosine shards store unit vectors, as a Qdrant server does.
    unit = np.asarray(pts[0].vector) / np.linalg.norm(pts[0].vector)
    assert got[pts[0].id] == pytest.approx(unit.tolist(), abs=1e-5)
    other = again.with_base("t2", DIM)
    assert await other.count("alice") == 0
    assert await again.drop_all() == 1
    assert await again.count("alice") == 0
    await again.close()


async def test_a_half_created_shard_is_created_again(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "leftover").write_text("x")
    store = EdgeVectorStore(tmp_path, "t", DIM)
    await store.upsert(_points()[:2])
    assert await store.count("alice") == 1
    await store.close()


async def test_dimension_mismatch_is_refused(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM)
    await store.upsert(_points()[:1])
    await store.close()
    other = EdgeVectorStore(tmp_path, "t", DIM * 2)
    with pytest.raises(RuntimeError, match="rebuild the index"):
        await other.upsert(
            [VectorPoint(str(uuid.uuid4()), [0.0] * DIM * 2, "alice", "s", T0, None)]
        )


def _disk(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def test_compact_vacuums_deleted_points_once_after_changes(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM)
    assert await store.compact() is False  # no shard yet
    rng = np.random.default_rng(0)
    pts = [
        VectorPoint(str(uuid.uuid4()), rng.normal(size=DIM).tolist(), "alice", "s", T0, None)
        for _ in range(2000)  # Edge vacuums segments of 1,000 points or more
    ]
    await store.upsert(pts)
    await store.delete_user("alice")
    before = _disk(tmp_path)
    assert await store.compact() is True
    assert _disk(tmp_path) < before  # the deleted points are gone from the segments
    assert await store.compact() is False  # nothing changed since
    await store.upsert(pts[:1])
    assert await store.count("alice") == 1
    assert await store.compact() is True
    assert await store.count("alice") == 1
    await store.close()


async def test_compaction_never_builds_an_approximate_index(tmp_path):
    """Shards made before the setting get it when loaded: search stays exact."""
    import qdrant_edge as qe

    dim = 384  # 20k x 384 float32: past the default indexing threshold (~10 MB of vectors)
    old = qe.EdgeShard.create(
        str(tmp_path / "t"), qe.EdgeConfig(vectors=qe.EdgeVectorParams(dim, qe.Distance.Cosine))
    )
    old.close()
    (tmp_path / "t" / "memserve-vectors.json").write_text(f'{{"dim": {dim}}}')
    store = EdgeVectorStore(tmp_path, "t", dim)
    rng = np.random.default_rng(1)
    pts = [
        VectorPoint(str(uuid.uuid4()), rng.normal(size=dim).tolist(), "alice", "s", T0, None)
        for _ in range(20_000)
    ]
    for k in range(0, len(pts), 5000):
        await store.upsert(pts[k : k + 5000])
    await store.delete("alice", [p.id for p in pts[:5000]])
    assert await store.compact() is True
    assert store._shard.info().indexed_vectors_count == 0
    assert await store.count("alice") == 15_000
    await store.close()


async def test_searched_users_are_answered_from_a_matrix_that_follows_every_write(tmp_path):
    from tests.unit.storage.test_vectors_congruence import FILTERS

    store = EdgeVectorStore(tmp_path, "t", DIM, cache_points=200)
    pts = _points()
    await store.upsert(pts)
    q = pts[4].vector
    # The first searches load alice once, together, and every search of hers is the matrix's:
    # a repeated search gives exactly the same answer.
    first, again = await asyncio.gather(*(store.search("alice", q, 10) for _ in range(2)))
    assert first == again == await store.search("alice", q, 10)
    assert store.searches == {"matrix": 3} and "bob" not in store.cache
    assert_ranked(first, store._engine_search("alice", q, 10))
    rng = np.random.default_rng(7)

    def agree():
        for f in FILTERS.values():
            assert_ranked(
                store.cache.get("alice").search(q, 15, f), store._engine_search("alice", q, 15, f)
            )

    for step in range(6):
        mine = [p for p in pts if p.user_id == "alice"]
        changed = [
            VectorPoint(p.id, rng.normal(size=DIM).tolist(), "alice", f"s{step % 3}", p.ts, "ann")
            for p in mine[step : step + 4]
        ]
        fresh = [
            VectorPoint(str(uuid.uuid4()), rng.normal(size=DIM).tolist(), "alice", "s1", T0, "ben")
            for _ in range(5)
        ]
        await store.upsert(changed + fresh)
        pts = [p for p in pts if p.id not in {c.id for c in changed}] + changed + fresh
        await store.delete("alice", [fresh[0].id, mine[-1].id])
        pts = [p for p in pts if p.id not in (fresh[0].id, mine[-1].id)]
        agree()
    assert len(store.cache.get("alice")) == await store.count("alice")
    await store.delete_user("alice")
    assert "alice" not in store.cache and await store.search("alice", q, 5) == []
    await store.close()


async def test_a_user_larger_than_the_budget_stays_with_the_engine(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM, cache_points=10)
    pts = _points()
    await store.upsert(pts)
    assert not await store.warm("alice")  # 30 points, budget 10
    hits = await store.search("alice", pts[0].vector, 3)
    assert hits[0][0] == pts[0].id and store.searches == {"engine": 1}
    await store.close()


async def test_a_closed_store_is_not_opened_again_by_a_load(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM)
    await store.upsert(_points())
    await store.close()
    assert not await store.warm("alice") and store._shard is None
    again = EdgeVectorStore(tmp_path, "t", DIM)  # the directory is free for another store
    assert await again.warm("alice")
    await again.close()
