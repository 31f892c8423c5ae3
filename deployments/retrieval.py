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
from serve_app.retrieval.bm25 import BM25Index, bm25_text
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
            # Built beside the cached index (which keeps serving) and reusing its token cache,
            # so only texts that changed are tokenized again.
            old = BM25Index(self.settings.bm25_backend) if cached is None else cached.bm25
            fresh = await asyncio.to_thread(
                old.with_docs, [(r["id"], bm25_text(r["text"], r["index_text"])) for r in rows]
            )
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
        # The index generation (store + its model's embedder) is read once, before any await:
        # a switch to another generation mid-search cannot mix a query vector of one model
        # with the collection of another.
        vectors, embed = self.vectors, self.embed
        version = await self.repo.index_version(user_id)
        if version is None:
            return None
        depth = max(limit, self.settings.retrieval_candidates)

        async def by_vector() -> list[tuple[str, float]]:
            [vector] = await embed([query])
            return await vectors.search(user_id, vector, depth, filters)

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


@dataclass
class _Generation:
    """One vector-index generation: its collections and the model its vectors come from."""

    number: int
    model: str
    dim: int
    status: str  # building | active | previous
    store: QdrantVectorStore
    embed: object  # async (list[str]) -> list[vector], with this generation's model
    served: bool  # True when the Embedder deployment runs this model


LIVE = ("building", "active", "previous")


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
        # Index generations (rebuilds to another embedding model): PostgreSQL says which one
        # is active; every replica follows it (refreshed each second and on every switch).
        self.generations: dict[int, _Generation] = {}
        self._local_models: dict[str, object] = {}
        self._gen_lock = asyncio.Lock()
        await self.pool.execute(
            "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
            " status, activated_at) VALUES (0, $1, $2, $3, 'active', now())"
            " ON CONFLICT DO NOTHING",
            self.embedding_model,
            info["dim"],
            self.settings.qdrant_collection,
        )
        await self._refresh_generations()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def _embed(self, texts: list[str]):
        return await self.embedder.embed.remote(texts)

    # --- generations ------------------------------------------------------------------------

    async def _local_model(self, model: str):
        """A model other than the Embedder deployment's, loaded in this replica (for queries
        and the catch-up sweep; the bulk of a rebuild is embedded by the job's actor pool)."""
        if model not in self._local_models:
            from deployments.embedder import Embedder

            self._local_models[model] = await asyncio.to_thread(Embedder, model, "cpu", 1)
        return self._local_models[model]

    async def _generation(self, row) -> _Generation:
        served = row["embedding_model"] == self.embedding_model
        old = self.generations.get(row["generation"])
        if old is not None:
            old.status = row["status"]
            return old
        if served:
            embed = self._embed
        else:
            local = await self._local_model(row["embedding_model"])

            async def embed(texts: list[str], _m=local):
                return list(await asyncio.to_thread(_m.encode, texts))

        store = (
            self.vectors
            if row["collection"] == self.vectors.base
            else self.vectors.with_base(row["collection"], row["dim"])
        )
        return _Generation(
            row["generation"], row["embedding_model"], row["dim"], row["status"], store, embed,
            served,
        )

    async def _refresh_generations(self) -> None:
        async with self._gen_lock:
            rows = await self.pool.fetch(
                "SELECT generation, embedding_model, dim, collection, status"
                " FROM vector_generations WHERE status <> 'retired' ORDER BY generation"
            )
            gens = {r["generation"]: await self._generation(r) for r in rows}
            self.generations = gens
            active = next((g for g in gens.values() if g.status == "active"), None)
            if active is not None and (
                self.retriever.vectors is not active.store or self.retriever.embed != active.embed
            ):
                # One synchronous step: searches read (store, embed) together.
                self.retriever.vectors, self.retriever.embed = active.store, active.embed
                logger.info("searching index generation %s (%s)", active.number, active.model)

    def _active(self) -> _Generation:
        return next(g for g in self.generations.values() if g.status == "active")

    async def _maintain(self) -> None:
        while True:
            try:
                await self._refresh_generations()
                for g in list(self.generations.values()):
                    # A building generation is filled by its rebuild job, which sweeps it at
                    # the end (sweep_generation); sweeping it here too would embed twice.
                    if not g.served and g.status != "building":
                        await self._sweep(g)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("index generation maintenance failed")
            await asyncio.sleep(1.0)

    async def _sweep(self, g: _Generation, limit: int = 256) -> int:
        """Embed into `g` the entries it lacks (new or changed since it was built)."""
        rows = await self.pool.fetch(
            "SELECT e.id::text AS id, e.user_id, e.session_id, e.ts, e.speaker, e.index_text,"
            " e.updated_at FROM memory_entries e WHERE NOT EXISTS (SELECT 1 FROM"
            " generation_members m WHERE m.generation=$1 AND m.entry_id=e.id) LIMIT $2",
            g.number,
            limit,
        )
        if not rows:
            return 0
        vectors = await g.embed([r["index_text"] for r in rows])
        await g.store.upsert(
            [
                VectorPoint(r["id"], v, r["user_id"], r["session_id"], r["ts"], r["speaker"])
                for r, v in zip(rows, vectors, strict=True)
            ]
        )
        await self.mark_members(g.number, [(r["id"], r["updated_at"]) for r in rows])
        return len(rows)

    async def sweep_generation(self, generation: int, limit: int = 256) -> int:
        """Embed into `generation` up to `limit` entries it lacks; returns how many."""
        return await self._sweep(self.generations[generation], limit)

    async def mark_members(self, generation: int, items: list) -> None:
        """Record entries as embedded into `generation`, unless changed since they were read
        ((id, updated_at) pairs): a changed text is embedded again by the next sweep."""
        await self.pool.executemany(
            "INSERT INTO generation_members (generation, entry_id) SELECT $1, id"
            " FROM memory_entries WHERE id=$2::uuid AND updated_at=$3 ON CONFLICT DO NOTHING",
            [(generation, i, u) for i, u in items],
        )

    async def create_generation(self, model: str) -> dict:
        """A new generation for `model` (status building), or the one already building for it,
        so a restarted rebuild continues where it was."""
        row = await self.pool.fetchrow(
            "SELECT generation, dim FROM vector_generations"
            " WHERE status='building' AND embedding_model=$1",
            model,
        )
        if row is None:
            local = await self._local_model(model) if model != self.embedding_model else None
            dim = local.dim if local is not None else self.vectors.dim
            async with self.pool.acquire() as conn, conn.transaction():
                # Any other unfinished build is abandoned: one rebuild at a time.
                await conn.execute(
                    "UPDATE vector_generations SET status='retired' WHERE status='building'"
                )
                n = await conn.fetchval(
                    "SELECT COALESCE(max(generation), 0) + 1 FROM vector_generations"
                )
                await conn.execute(
                    "INSERT INTO vector_generations (generation, embedding_model, dim,"
                    " collection, status) VALUES ($1, $2, $3, $4, 'building')",
                    n,
                    model,
                    dim,
                    f"{self.settings.qdrant_collection}__g{n}",
                )
            row = {"generation": n, "dim": dim}
        await self._refresh_generations()
        return {"generation": row["generation"], "dim": row["dim"], "model": model}

    async def index_generation(self, generation: int, points: list[VectorPoint]) -> None:
        await self.generations[generation].store.upsert(points)

    async def generation_missing(self, generation: int) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM memory_entries e WHERE NOT EXISTS (SELECT 1 FROM"
            " generation_members m WHERE m.generation=$1 AND m.entry_id=e.id)",
            generation,
        )

    async def activate_generation(self, generation: int) -> dict:
        """Make `generation` the one searched; the replaced one is kept for rollback."""
        missing = await self.generation_missing(generation)
        if missing:
            raise RuntimeError(f"generation {generation} still lacks {missing} entries")
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM vector_generations WHERE generation=$1 FOR UPDATE", generation
            )
            if status not in ("building", "previous"):
                raise ValueError(f"generation {generation} is {status!r}, cannot activate it")
            retired = await conn.fetch(
                "UPDATE vector_generations SET status='retired' WHERE status='previous'"
                " AND generation <> $1 RETURNING generation, collection",
                generation,
            )
            await conn.execute(
                "UPDATE vector_generations SET status='retired' WHERE generation=$1", generation
            )
            await conn.execute(
                "UPDATE vector_generations SET status='previous' WHERE status='active'"
            )
            await conn.execute(
                "UPDATE vector_generations SET status='active', activated_at=now()"
                " WHERE generation=$1",
                generation,
            )
        # A retired generation is no longer written to (nor erased from): drop its vectors.
        dropped = []
        for r in retired:
            g = self.generations.get(r["generation"])
            if g is not None:
                await g.store.drop_all()
                dropped.append(r["generation"])
        await self._refresh_generations()
        return {"active": generation, "dropped": dropped, **self.generation_status()}

    async def rollback_generation(self) -> dict:
        """One call: the previous generation becomes active again, the active one previous."""
        async with self.pool.acquire() as conn, conn.transaction():
            prev = await conn.fetchval(
                "SELECT generation FROM vector_generations WHERE status='previous' FOR UPDATE"
            )
            if prev is None:
                raise ValueError("no previous index generation to roll back to")
            await conn.execute(
                "UPDATE vector_generations SET status='retired' WHERE generation=$1", prev
            )
            await conn.execute(
                "UPDATE vector_generations SET status='previous' WHERE status='active'"
            )
            await conn.execute(
                "UPDATE vector_generations SET status='active', activated_at=now()"
                " WHERE generation=$1",
                prev,
            )
        await self._refresh_generations()
        return {"active": prev, **self.generation_status()}

    def generation_status(self) -> dict:
        return {
            "generations": [
                {"generation": g.number, "model": g.model, "dim": g.dim, "status": g.status}
                for g in sorted(self.generations.values(), key=lambda g: g.number)
            ]
        }

    async def _write_served(self, points: list[VectorPoint]) -> None:
        # Generations of the Embedder's model take the vectors as they are; the others embed
        # the entry again with their own model (sweep), because their membership row is gone.
        for g in self.generations.values():
            if g.served and g.status in LIVE:
                await g.store.upsert(points)

    async def _delete_everywhere(self, user_id: str, ids: list[str]) -> None:
        for g in self.generations.values():
            await g.store.delete(user_id, ids)

    # --- serving ----------------------------------------------------------------------------

    async def search(
        self,
        user_id: str,
        query: str,
        limit: int,
        filters: dict,
        strategy: str,
        expand_links: bool = False,
        links_per_hit: int = 3,
    ) -> dict | None:
        t0 = time.perf_counter()
        results = await self.retriever.search(
            user_id, query, limit, VectorFilters(**filters), strategy
        )
        if results is None:
            return None
        if expand_links and results:
            await self._expand_links(user_id, results, links_per_hit)
        return {"results": results, "took_ms": (time.perf_counter() - t0) * 1000}

    async def _expand_links(self, user_id: str, results: list[dict], per_hit: int) -> None:
        from serve_app.jobs.store import linked_memories

        links = await linked_memories(self.pool, user_id, [r["id"] for r in results], per_hit)
        wanted = sorted({lk["id"] for lst in links.values() for lk in lst})
        rows = await self.repo.memories_by_ids(user_id, wanted) if wanted else {}
        for r in results:
            r["linked"] = [
                {**rows[lk["id"]], "reason": lk["reason"], "link_score": lk["link_score"]}
                for lk in links.get(r["id"], [])
                if lk["id"] in rows
            ]

    async def index(self, points: list[VectorPoint]) -> None:
        await self._write_served(points)

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
                await self._write_served(
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
                await conn.execute(
                    "DELETE FROM generation_members WHERE entry_id=$1::uuid", row["id"]
                )
            await self.repo.bump_index_version(conn, [user_id])
        return row

    async def apply_vector_changes(
        self, user_id: str, upserts: list[dict], deletes: list[str]
    ) -> None:
        """For offline jobs (called inside their PostgreSQL transaction): re-embed and re-index
        changed entries ({id, index_text, session_id, ts, speaker}), drop removed ones."""
        if upserts:
            vectors = await self._embed([u["index_text"] for u in upserts])
            await self._write_served(
                [
                    VectorPoint(u["id"], v, user_id, u["session_id"], u["ts"], u["speaker"])
                    for u, v in zip(upserts, vectors, strict=True)
                ]
            )
        if deletes:
            await self._delete_everywhere(user_id, deletes)

    async def neighbours(
        self, user_id: str, ids: list[str], depth: int
    ) -> dict[str, list[tuple[str, float]]]:
        """Each entry's `depth` most similar entries of the same user in the active index."""
        store = self.retriever.vectors
        vectors = await store.retrieve_vectors(user_id, ids)
        out: dict[str, list[tuple[str, float]]] = {}
        for i in ids:
            v = vectors.get(i)
            if v is None:
                continue
            hits = await store.search(user_id, v, depth + 1)
            out[i] = [(h, s) for h, s in hits if h != i][:depth]
        return out

    async def delete_memory(self, user_id: str, memory_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_users_shared(conn, [user_id])
            if not await self.repo.delete_memory(conn, user_id, memory_id):
                return False
            await self._delete_everywhere(user_id, [memory_id])
            await self.repo.bump_index_version(conn, [user_id])
        return True

    async def delete_user(self, user_id: str) -> bool:
        """Erase a user from both stores. Waits for in-flight worker batches of that user."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.lock_user_exclusive(conn, user_id)
            for g in self.generations.values():
                await g.store.delete_user(user_id)
            existed = await self.repo.delete_user(conn, user_id)
        self.retriever.forget(user_id)
        return existed

    async def count_vectors(self, user_id: str) -> int:
        return await self.retriever.vectors.count(user_id)

    async def ready(self) -> dict:
        await self.vectors.check()
        active = self._active()
        return {
            "qdrant": "server" if self.settings.qdrant_url else "local",
            "layout": self.vectors.layout,
            "bm25_backend": self.settings.bm25_backend,
            "fusion": self.settings.fusion_method,
            "cached_users": len(self.retriever._cache),
            "index_generation": active.number,
            "index_model": active.model,
        }

    def __del__(self) -> None:
        # Release the local-mode file lock promptly when the replica goes away.
        with contextlib.suppress(Exception):
            self._maintenance.cancel()
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
