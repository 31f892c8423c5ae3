"""Qdrant Edge answers the calls of the qdrant-client layouts identically."""

import uuid

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vectors import QdrantVectorStore, VectorPoint
from tests.unit.storage.test_vectors_congruence import DIM, T0, _exercise, _points


async def test_edge_agrees_with_local_mode(tmp_path):
    reference = await _exercise(
        QdrantVectorStore(AsyncQdrantClient(path=str(tmp_path / "a")), "t", DIM, "per_user")
    )
    edge = await _exercise(EdgeVectorStore(tmp_path / "edge", "t", DIM))
    assert reference["all"][0][0] == str(uuid.UUID(int=1))
    for key, value in reference.items():
        if isinstance(value, list):
            assert [i for i, _ in edge[key]] == [i for i, _ in value], key
            assert [s for _, s in edge[key]] == pytest.approx([s for _, s in value], abs=1e-5)
        else:
            assert edge[key] == value, key


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


async def test_dimension_mismatch_is_refused(tmp_path):
    store = EdgeVectorStore(tmp_path, "t", DIM)
    await store.upsert(_points()[:1])
    await store.close()
    other = EdgeVectorStore(tmp_path, "t", DIM * 2)
    with pytest.raises(RuntimeError, match="rebuild the index"):
        await other.upsert(
            [VectorPoint(str(uuid.uuid4()), [0.0] * DIM * 2, "alice", "s", T0, None)]
        )
