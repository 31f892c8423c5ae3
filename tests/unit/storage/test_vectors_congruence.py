"""The same calls against each vector-store layout give the same answers.

Runs both layouts on qdrant-client local mode; set MEMSERVE_TEST_QDRANT_URL to add a Qdrant
server (none can be installed on the CI machine, so that leg is skipped there).
"""

import os
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

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


async def _exercise(store: QdrantVectorStore) -> dict:
    pts = _points()
    await store.upsert(pts)
    q = pts[0].vector
    out = {
        "all": await store.search("alice", q, 10),
        "session": await store.search("alice", q, 10, VectorFilters(session_id="s1")),
        "speaker": await store.search("alice", q, 10, VectorFilters(speaker="ann")),
        "time": await store.search(
            "alice",
            q,
            10,
            VectorFilters(time_from=T0 + timedelta(days=10), time_to=T0 + timedelta(days=30)),
        ),
        "nobody": await store.search("carol", q, 10),
        "count": (await store.count("alice"), await store.count("bob")),
    }
    await store.delete("alice", [pts[0].id])
    out["after_delete"] = await store.search("alice", q, 3)
    await store.delete_user("alice")
    out["after_erase"] = (await store.count("alice"), await store.count("bob"))
    await store.close()
    return out


async def test_layouts_agree(tmp_path):
    results = {name: await _exercise(store) for name, store in _stores(tmp_path)}
    reference = results.pop("per_user")
    assert reference["all"][0][0] == str(uuid.UUID(int=1))
    assert reference["nobody"] == []
    assert reference["count"] == (30, 30)
    assert reference["after_erase"] == (0, 30)
    alice_ids = {str(uuid.UUID(int=i + 1)) for i in range(0, 60, 2)}
    assert {i for i, _ in reference["all"]} <= alice_ids
    for name, other in results.items():
        for key, value in reference.items():
            if isinstance(value, list):
                assert [i for i, _ in other[key]] == [i for i, _ in value], (name, key)
                assert [s for _, s in other[key]] == pytest.approx([s for _, s in value])
            else:
                assert other[key] == value, (name, key)


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
