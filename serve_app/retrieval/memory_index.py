"""The memory index: the only owner of the vector store. Hybrid search, memory edits and
erasure in both stores (PostgreSQL and vectors, together), vector writes for the ingest worker
and the offline jobs, and the index generations that decide what is searched.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg

from serve_app.model.audit import AuditRecord
from serve_app.retrieval.generations import IndexGenerations, LocalModel
from serve_app.retrieval.hybrid import Embed, HybridRetriever, SearchTarget
from serve_app.settings import Settings
from serve_app.storage import audit_repo, export_repo, generations_repo
from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.links_repo import linked_memories
from serve_app.storage.postgres import Repository, create_pool
from serve_app.storage.vector_stores import VectorStore, embedded_kind, open_vector_store
from serve_app.storage.vectors import VectorFilters, VectorPoint


class MemoryIndex:
    """Search, edits, erasure and generations over one pool and one Qdrant client."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        vectors: VectorStore,
        model: str,
        embed: Embed,
        load_model: Callable[[str], LocalModel],
        embed_query: Embed | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.repo = Repository(pool)
        self.vectors = vectors
        # The Embedder group's model (`model`): `embed` for entries, `embed_query` (default:
        # the same) for queries.
        self.embed = embed
        embed_query = embed_query or embed
        self.retriever = HybridRetriever(self.repo, SearchTarget(vectors, embed_query, 1), settings)
        # PostgreSQL says which generation is active; this process follows it.
        self.generations = IndexGenerations(
            pool, vectors, model, embed, load_model, self.retriever.retarget, embed_query
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        model: str,
        dim: int,
        embed: Embed,
        load_model: Callable[[str], LocalModel],
        embed_query: Embed | None = None,
    ) -> MemoryIndex:
        """Connect both stores for the Embedder's `model` (`dim`-d) and follow the active
        generation."""
        pool = await create_pool(settings.pg_dsn, settings.pg_pool_min, settings.pg_pool_max)
        vectors = open_vector_store(settings, dim)
        index = cls(settings, pool, vectors, model, embed, load_model, embed_query)
        await index.generations.start()
        return index

    # --- reads ------------------------------------------------------------------------------

    async def search(
        self,
        user_id: str,
        query: str,
        limit: int,
        filters: dict,
        strategy: str,
        expand_links: bool = False,
        links_per_hit: int = 3,
        explain: bool = False,
    ) -> dict | None:
        """{"results", "took_ms"}, or None when the user is unknown; `explain` adds each
        result's per-ranking scores."""
        t0 = time.perf_counter()
        results = await self.retriever.search(
            user_id, query, limit, VectorFilters(**filters), strategy, explain
        )
        if results is None:
            return None
        if expand_links and results:
            await self._expand_links(user_id, results, links_per_hit)
        return {"results": results, "took_ms": (time.perf_counter() - t0) * 1000}

    async def _expand_links(self, user_id: str, results: list[dict], per_hit: int) -> None:
        links = await linked_memories(self.pool, user_id, [r["id"] for r in results], per_hit)
        wanted = sorted({lk["id"] for lst in links.values() for lk in lst})
        version = self.retriever.target.memory_version
        rows = await self.repo.memories_by_ids(user_id, wanted, version) if wanted else {}
        for r in results:
            r["linked"] = [
                {**rows[lk["id"]], "reason": lk["reason"], "link_score": lk["link_score"]}
                for lk in links.get(r["id"], [])
                if lk["id"] in rows
            ]

    async def neighbours(
        self, user_id: str, ids: list[str], depth: int
    ) -> dict[str, list[tuple[str, float]]]:
        """Each entry's `depth` most similar entries of the same user in the active index."""
        store = self.retriever.target.store
        vectors = await store.retrieve_vectors(user_id, ids)
        out: dict[str, list[tuple[str, float]]] = {}
        for i in ids:
            v = vectors.get(i)
            if v is None:
                continue
            hits = await store.search(user_id, v, depth + 1)
            out[i] = [(h, s) for h, s in hits if h != i][:depth]
        return out

    async def count_vectors(self, user_id: str) -> int:
        return await self.retriever.target.store.count(user_id)

    async def ready(self) -> dict:
        await self.vectors.check()
        active = self.generations.active()
        return {
            "qdrant": "server" if self.settings.qdrant_url else embedded_kind(self.vectors),
            "layout": self.vectors.layout,
            "bm25_backend": self.settings.bm25_backend,
            "fusion": self.settings.fusion_method,
            "cached_users": self.retriever.cached_users,
            "index_generation": active.number,
            "index_model": active.model,
            "memory_version": active.memory_version,
            **self._matrix_stats(),
        }

    def _matrix_stats(self) -> dict:
        store = self.retriever.target.store
        if isinstance(store, EdgeVectorStore):
            return {"vector_matrices": store.matrix_stats()}
        return {}

    # --- writes -----------------------------------------------------------------------------

    async def index(self, points: list[VectorPoint], memory_version: int = 1) -> None:
        """Index entries of `memory_version` (the worker read it, under the switch lock, as
        the active one) into the generations that index that version."""
        gens = self.generations
        if not any(g.memory_version == memory_version for g in gens.generations.values()):
            await gens.refresh()  # switched by another process a moment ago
        await gens.write_served(points, memory_version)

    async def update_memory(
        self, user_id: str, memory_id: str, patch: dict, audit: AuditRecord | None = None
    ) -> dict | None:
        """Change a memory in PostgreSQL and the vector index together, or not at all (with
        its audit row)."""
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
                [vector] = await self.embed([text])
                point = VectorPoint(
                    row["id"], vector, user_id, row["session_id"], row["ts"], row["speaker"]
                )
                await self.generations.write_served([point], row["version"])
                await generations_repo.forget_member(conn, row["id"])
            await self.repo.bump_index_revision(conn, [user_id])
            if audit is not None:
                await audit_repo.append(conn, audit)
        return row

    async def apply_vector_changes(
        self, user_id: str, upserts: list[dict], deletes: list[str]
    ) -> None:
        """For offline jobs (called inside their PostgreSQL transaction): re-embed and re-index
        changed entries ({id, index_text, session_id, ts, speaker, version?}), drop removed
        ones."""
        if upserts:
            vectors = await self.embed([u["index_text"] for u in upserts])
            for version in sorted({u.get("version", 1) for u in upserts}):
                await self.generations.write_served(
                    [
                        VectorPoint(u["id"], v, user_id, u["session_id"], u["ts"], u["speaker"])
                        for u, v in zip(upserts, vectors, strict=True)
                        if u.get("version", 1) == version
                    ],
                    version,
                )
        if deletes:
            await self.generations.delete_everywhere(user_id, deletes)

    async def delete_memory(
        self, user_id: str, memory_id: str, audit: AuditRecord | None = None
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_users_shared(conn, [user_id])
            if not await self.repo.delete_memory(conn, user_id, memory_id):
                return False
            await self.generations.delete_everywhere(user_id, [memory_id])
            await self.repo.bump_index_revision(conn, [user_id])
            if audit is not None:
                await audit_repo.append(conn, audit)
        return True

    async def delete_user(self, user_id: str, audit: AuditRecord | None = None) -> bool:
        """Erase a user from both stores. Waits for in-flight worker batches of that user."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_user_exclusive(conn, user_id)
            await self.generations.delete_user(user_id)
            await export_repo.erase_user_traces(conn, user_id)
            existed = await self.repo.delete_user(conn, user_id)
            if existed and audit is not None:
                await audit_repo.append(conn, audit)
        self.retriever.forget(user_id)
        return existed

    async def close(self) -> None:
        await self.vectors.close()
        await self.pool.close()
