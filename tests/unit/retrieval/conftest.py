from __future__ import annotations

import pytest
from qdrant_client import AsyncQdrantClient

from serve_app.storage.vectors import QdrantVectorStore
from tests.unit.retrieval.memory_data import DIM
from tests.unit.storage.conftest import pg_dsn, repo  # noqa: F401  (fixtures used here)


@pytest.fixture
async def vectors(tmp_path):
    store = QdrantVectorStore(
        AsyncQdrantClient(path=str(tmp_path / "qdrant")), "t", DIM, "per_user"
    )
    yield store
    await store.close()
