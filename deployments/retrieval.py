"""Retrieval router: the only component that talks to the vector index.

Hybrid search = Qdrant vectors + BM25 over the user's entries + metadata filters, fused.
BM25 indexes live in replica memory, one per user, rebuilt when the user's `index_version`
in PostgreSQL moves, so several replicas stay consistent without talking to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from ray import serve

from serve_app.profiles import GroupResources
from serve_app.retrieval.bm25 import BM25Index
from serve_app.retrieval.fusion import fuse
from serve_app.settings import Settings
from serve_app.storage.postgres import Repository, create_pool
from serve_app.storage.vectors import QdrantVectorStore, VectorFilters, VectorPoint

logger = logging.getLogger("ray.serve")

STRATEGIES = ("hybrid", "embedding", "bm25")


@dataclass
class _UserIndex:
    version: int
    bm25: BM25Index
    # id -> (session_id, ts epoch seconds, speaker lower-cased), for filtering BM25 hits
    meta: dict[str, tuple[str, float, str]]

    def allowed(self, f: VectorFilters) -> set[str] | None:
        if f.is_empty():
            return None
        lo = f.time_from.timestamp() if f.time_from else float("-inf")
        hi = f.time_to.timestamp() if f.time_to else float("inf")
        speaker = f.speaker.lower() if f.speaker else None
        return {
            i
            for i, (session, ts, spk) in self.meta.items()
            if (f.session_id is None or session == f.session_id)
            and lo <= ts <= hi
            and (speaker is None or spk == speaker)
        }


class HybridRetriever:
    """Search logic over a repository, a vector store and an embedding function."""

    def __init__(
        self,
        repo: Repository,
        vectors: QdrantVectorStore,
        embed,  # async (list[str]) -> list[vector]
        settings: Settings,
    ) -> None:
        self.repo = repo
        self.vectors = vectors
        self.embed = embed
        self.settings = settings
        self._cache: OrderedDict[str, _UserIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _user_index(self, user_id: str, version: int) -> _UserIndex:
        cached = self._cache.get(user_id)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(user_id)
            return cached
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(user_id)
            if cached is not None and cached.version >= version:
                return cached
            # Read the version before the rows: a change racing this read leaves the cache
            # marked older than its content, which only costs one more rebuild.
            version = await self.repo.index_version(user_id) or version
            rows = await self.repo.index_docs(user_id)
            bm25 = BM25Index(self.settings.bm25_backend) if cached is None else cached.bm25
            fresh = BM25Index(bm25.backend)
            fresh._tokens = bm25._tokens  # reuse cached tokens: only changed texts re-tokenize
            await asyncio.to_thread(fresh.rebuild, [(r["id"], r["index_text"]) for r in rows])
            entry = _UserIndex(
                version=version,
                bm25=fresh,
                meta={
                    r["id"]: (r["session_id"], r["ts"].timestamp(), (r["speaker"] or "").lower())
                    for r in rows
                },
            )
            self._cache[user_id] = entry
            self._cache.move_to_end(user_id)
            while len(self._cache) > self.settings.bm25_cache_users:
                self._cache.popitem(last=False)
            return entry

    def forget(self, user_id: str) -> None:
        self._cache.pop(user_id, None)
        self._locks.pop(user_id, None)

    async def search(
        self,
        user_id: str,
        query: str,
        limit: int,
        filters: VectorFilters,
        strategy: str,
    ) -> list[dict] | None:
        """Ranked memories with scores, or None when the user is unknown."""
        version = await self.repo.index_version(user_id)
        if version is None:
            return None
        depth = max(limit, self.settings.retrieval_candidates)

        async def by_vector() -> list[tuple[str, float]]:
            [vector] = await self.embed([query])
            return await self.vectors.search(user_id, vector, depth, filters)

        async def by_bm25() -> list[tuple[str, float]]:
            idx = await self._user_index(user_id, version)
            return idx.bm25.search(query, depth, idx.allowed(filters))

        if strategy == "embedding":
            ranked = await by_vector()
        elif strategy == "bm25":
            ranked = await by_bm25()
        else:
            vec, lex = await asyncio.gather(by_vector(), by_bm25())
            ranked = fuse(
                [vec, lex],
                method=self.settings.fusion_method,
                weights=self.settings.fusion_weights,
                k=self.settings.fusion_rrf_k,
            )
        # Hydrate from PostgreSQL, the system of record: an id the index still holds but the
        # database no longer does (a crash between the two writes) is never returned.
        head = ranked[: limit + 10]
        rows = await self.repo.memories_by_ids(user_id, [i for i, _ in head])
        out = []
        for doc_id, score in head:
            row = rows.get(doc_id)
            if row is not None:
                out.append({**row, "score": score})
            if len(out) == limit:
                break
        return out


class RetrievalRouterDeployment:
    async def __init__(self, settings_env: dict, embedder) -> None:
        self.settings = Settings(**settings_env)
        self.embedder = embedder
        self.pool = await create_pool(
            self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
        )
        self.repo = Repository(self.pool)
        info = await embedder.info.remote()
        self.embedding_model = info["model"]
        self.vectors = QdrantVectorStore.open(
            url=self.settings.qdrant_url,
            api_key=(
                self.settings.qdrant_api_key.get_secret_value()
                if self.settings.qdrant_api_key
                else None
            ),
            path=str(self.settings.qdrant_path),
            base=self.settings.qdrant_collection,
            dim=info["dim"],
        )
        self.retriever = HybridRetriever(self.repo, self.vectors, self._embed, self.settings)

    async def _embed(self, texts: list[str]):
        return await self.embedder.embed.remote(texts)

    async def search(
        self, user_id: str, query: str, limit: int, filters: dict, strategy: str
    ) -> dict | None:
        t0 = time.perf_counter()
        results = await self.retriever.search(
            user_id, query, limit, VectorFilters(**filters), strategy
        )
        if results is None:
            return None
        return {"results": results, "took_ms": (time.perf_counter() - t0) * 1000}

    async def index(self, points: list[VectorPoint]) -> None:
        await self.vectors.upsert(points)

    async def update_memory(self, user_id: str, memory_id: str, patch: dict) -> dict | None:
        """Change a memory in PostgreSQL and the vector index together, or not at all."""
        text = patch.get("memory")
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_users_shared(conn, [user_id])
            row = await self.repo.update_memory(
                conn,
                user_id,
                memory_id,
                text=text,
                index_text=text,
                metadata=patch.get("metadata"),
                importance=patch.get("importance"),
            )
            if row is None:
                return None
            if text is not None:
                [vector] = await self._embed([text])
                await self.vectors.upsert(
                    [
                        VectorPoint(
                            id=row["id"],
                            vector=vector,
                            user_id=user_id,
                            session_id=row["session_id"],
                            ts=row["ts"],
                            speaker=row["speaker"],
                        )
                    ]
                )
            await self.repo.bump_index_version(conn, [user_id])
        return row

    async def delete_memory(self, user_id: str, memory_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_users_shared(conn, [user_id])
            if not await self.repo.delete_memory(conn, user_id, memory_id):
                return False
            await self.vectors.delete(user_id, [memory_id])
            await self.repo.bump_index_version(conn, [user_id])
        return True

    async def delete_user(self, user_id: str) -> bool:
        """Erase a user from both stores. Waits for in-flight worker batches of that user."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_user_exclusive(conn, user_id)
            await self.vectors.delete_user(user_id)
            existed = await self.repo.delete_user(conn, user_id)
        self.retriever.forget(user_id)
        return existed

    async def count_vectors(self, user_id: str) -> int:
        return await self.vectors.count(user_id)

    async def ready(self) -> dict:
        await self.vectors.check()
        return {
            "qdrant": "server" if self.settings.qdrant_url else "local",
            "layout": self.vectors.layout,
            "bm25_backend": self.settings.bm25_backend,
            "fusion": self.settings.fusion_method,
            "cached_users": len(self.retriever._cache),
        }

    def __del__(self) -> None:
        # Release the local-mode file lock promptly when the replica goes away.
        with contextlib.suppress(Exception):
            self.vectors.client._client.close()  # type: ignore[attr-defined]


def build_retrieval(group: GroupResources, settings_env: dict, embedder, embedded: bool):
    opts = group.deployment_options()
    if embedded:
        # Qdrant local mode holds a file lock: exactly one replica may own the directory.
        opts.pop("autoscaling_config", None)
        opts["num_replicas"] = 1
    return (
        serve.deployment(RetrievalRouterDeployment)
        .options(name="RetrievalRouter", **opts)
        .bind(settings_env, embedder)
    )
