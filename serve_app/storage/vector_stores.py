"""The vector stores the memory index can own, and which one the settings choose.

Both answer the same calls identically (tests/unit/storage/test_vectors_congruence.py).
"""

from __future__ import annotations

from serve_app.settings import Settings
from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vectors import QdrantVectorStore

VectorStore = QdrantVectorStore | EdgeVectorStore


def open_vector_store(settings: Settings, dim: int) -> VectorStore:
    """A Qdrant server when one is configured, else the embedded store of the settings."""
    if settings.qdrant_url is None and settings.vector_store == "edge":
        return EdgeVectorStore.open(
            path=str(settings.edge_path),
            base=settings.qdrant_collection,
            dim=dim,
            cache_points=settings.vector_cache_points,
        )
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return QdrantVectorStore.open(
        url=settings.qdrant_url,
        api_key=api_key,
        path=str(settings.qdrant_path),
        base=settings.qdrant_collection,
        dim=dim,
    )


def embedded_kind(store: VectorStore) -> str:
    return "edge" if isinstance(store, EdgeVectorStore) else "local"
