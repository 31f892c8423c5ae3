"""The same calls against each vector store give the same answers.

Runs Qdrant Edge (its engine alone, and with users' vectors searched as numpy matrices) and both
qdrant-client layouts in local mode; set MEMSERVE_TEST_QDRANT_URL to add a Qdrant server (none
can be installed on the CI machine, so that leg is skipped there).
"""

import os
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vector_stores import VectorStore
from serve_app.storage.vectors import QdrantVectorStore, VectorFilters, VectorPoint

DIM = 16
T0 = datetime(2023, 1, 1, tzinfo=UTC)


def _stores(tmp_path):
    yield (
        "per_user",
        QdrantVectorStore(AsyncQdrantClient(path=str(tmp_path / "a")), "t", DIM, "per_user"),
    )
    yield (
        "shared-local",
        QdrantVectorStore(AsyncQdrantClient(path=str(tmp_path / "b")), "t", DIM, "shared"),
    )
    yield "edge", EdgeVectorStore(tmp_path / "edge", "t", DIM, cache_points=0)
    yield "edge-matrix", EdgeVectorStore(tmp_path / "edge-m", "t", DIM)
    url = os.environ.get("MEMSERVE_TEST_QDRANT_URL")
    if url:
        yield (
            "shared-server",
            QdrantVectorStore(
                AsyncQdrantClient(url=url), f"t{uuid.uuid4().hex[:8]}", DIM, "shared"
            ),
        )


def _points():
    rng = np.random.default_rng(0)
    pts = []
    for i in range(60):
        user = ("alice", "bob")[i % 2]
        pts.append(
            VectorPoint(
                id=str(uuid.UUID(int=i + 1)),
                vector=rng.normal(size=DIM).tolist(),
                user_id=user,
                session_id=f"s{i % 3}",
                ts=T0 + timedelta(days=i),
                speaker=("Ann", "Ben")[(i // 2) % 2],
            )
        )
    return pts


FILTERS = {
    "all": None,
    "session": VectorFilters(session_id="s1"),
    "speaker": VectorFilters(speaker="ann"),
    "time": VectorFilters(time_from=T0 + timedelta(days=10), time_to=T0 + timedelta(days=30)),
}


def _brute_force(
    pts: list[VectorPoint],
    user: str,
    q,
    limit: int,
    f: VectorFilters | None = None,
    gone: frozenset[str] = frozenset(),
) -> list[tuple[str, float]]:
    """The exact answer: cosine similarity against every point the user and filters allow."""
    f = f or VectorFilters()
    lo, hi = (
        f.time_from or datetime.min.replace(tzinfo=UTC),
        f.time_to or datetime.max.replace(tzinfo=UTC),
    )
    qv = np.asarray(q) / np.linalg.norm(q)
    scored = [
        (p.id, float(np.dot(qv, np.asarray(p.vector) / np.linalg.norm(p.vector))))
        for p in pts
        if p.user_id == user
        and p.id not in gone
        and (f.session_id is None or p.session_id == f.session_id)
        and (f.speaker is None or (p.speaker or "").lower() == f.speaker.lower())
        and lo <= p.ts <= hi
    ]
    return sorted(scored, key=lambda s: -s[1])[:limit]


def _expected() -> dict:
    pts = _points()
    q = pts[0].vector
    out: dict = {key: _brute_force(pts, "alice", q, 10, f) for key, f in FILTERS.items()}
    out["nobody"] = []
    out["count"] = (30, 30)
    out["after_delete"] = _brute_force(pts, "alice", q, 3, gone=frozenset({pts[0].id}))
    out["after_erase"] = (0, 30)
    return out


async def _exercise(store: VectorStore) -> dict:
    pts = _points()
    await store.upsert(pts[:40])
    if isinstance(store, EdgeVectorStore) and store.cache.max_points:
        # Loaded before the last writes, so the matrix must follow them.
        assert await store.warm("alice")
    await store.upsert(pts[40:])
    q = pts[0].vector
    out: dict = {key: await store.search("alice", q, 10, f) for key, f in FILTERS.items()}
    out["nobody"] = await store.search("carol", q, 10)
    out["count"] = (await store.count("alice"), await store.count("bob"))
    await store.delete("alice", [pts[0].id])
    out["after_delete"] = await store.search("alice", q, 3)
    await store.delete_user("alice")
    out["after_erase"] = (await store.count("alice"), await store.count("bob"))
    if isinstance(store, EdgeVectorStore):
        matrix = store.searches["matrix"]
        assert matrix == (5 if store.cache.max_points else 0), store.searches
        assert await store.search("alice", q, 3) == []
    await store.close()
    return out


def assert_ranked(got: list, want: list, context: object = None) -> None:
    """The same ids in the same order, with the same scores up to float rounding."""
    assert [i for i, _ in got] == [i for i, _ in want], context
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def _assert_same(got: dict, want: dict, name: str) -> None:
    assert got.keys() == want.keys(), name
    for key, value in want.items():
        if isinstance(value, list):
            assert_ranked(got[key], value, (name, key))
        else:
            assert got[key] == value, (name, key)


async def test_layouts_agree(tmp_path):
    expected = _expected()
    # The expectation itself is not empty: every filter leaves hits, in a known order.
    assert expected["all"][0][0] == str(uuid.UUID(int=1))
    assert all(len(expected[key]) >= 3 for key in FILTERS)
    assert expected["after_delete"][0][0] != str(uuid.UUID(int=1))
    results = {name: await _exercise(store) for name, store in _stores(tmp_path)}
    assert {"per_user", "shared-local", "edge", "edge-matrix"} <= results.keys()
    for name, got in results.items():
        _assert_same(got, expected, name)  # each layout gives the exact answer
    reference = results.pop("per_user")
    for name, other in results.items():
        _assert_same(other, reference, name)  # and the same answer as the other layouts


async def test_dimension_mismatch_is_refused(tmp_path):
    client = AsyncQdrantClient(path=str(tmp_path / "c"))
    store = QdrantVectorStore(client, "t", DIM, "shared")
    await store.upsert(_points()[:1])
    other = QdrantVectorStore(client, "t", DIM * 2, "shared")
    with pytest.raises(RuntimeError, match="rebuild the index"):
        await other.upsert(
            [VectorPoint(str(uuid.uuid4()), [0.0] * DIM * 2, "alice", "s", T0, None)]
        )
    await client.close()
