"""Retrieval router: the only component that talks to the vector index.

Hybrid search = Qdrant vectors + BM25 over the user's entries + metadata filters, fused.
BM25 indexes live in replica memory, one per user, rebuilt when the user's `index_version`
in PostgreSQL moves (or the memory version served changes), so several replicas stay
consistent without talking to each other.

Index generations: the active one decides the embedding model, the collections searched and
the memory version served (a re-extraction builds a new version in a new generation);
switching and rolling back go through `serve_app/storage/versions_repo.py`.
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
from serve_app.storage import versions_repo
from serve_app.storage.postgres import Repository, create_pool
from serve_app.storage.vectors import QdrantVectorStore, VectorFilters, VectorPoint

logger = logging.getLogger("ray.serve")

STRATEGIES = ("hybrid", "embedding", "bm25")


@dataclass
class _UserIndex:
    version: int  # the user's index_version when built
    memory_version: int  # the memory version its documents belong to
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
        # The memory version the vectors index; set together with `vectors` and `embed` when
        # the active generation changes (one synchronous step).
        self.memory_version = 1
        self._cache: OrderedDict[str, _UserIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _user_index(self, user_id: str, version: int, memory_version: int) -> _UserIndex:
        cached = self._cache.get(user_id)
        if cached is not None and (cached.version, cached.memory_version) == (
            version,
            memory_version,
        ):
            self._cache.move_to_end(user_id)
            return cached
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(user_id)
            if (
                cached is not None
                and cached.version >= version
                and cached.memory_version == memory_version
            ):
                return cached
            # Read the version before the rows: a change racing this read leaves the cache
            # marked older than its content, which only costs one more rebuild.
            version = await self.repo.index_version(user_id) or version
            rows = await self.repo.index_docs(user_id, memory_version)
            # Built beside the cached index (which keeps serving) and reusing its token cache,
            # so only texts that changed are tokenized again.
            old = BM25Index(self.settings.bm25_backend) if cached is None else cached.bm25
            fresh = await asyncio.to_thread(
                old.with_docs, [(r["id"], bm25_text(r["text"], r["index_text"])) for r in rows]
            )
            entry = _UserIndex(
                version=version,
                memory_version=memory_version,
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
        # The index generation (store + its model's embedder + its memory version) is read
        # once, before any await: a switch to another generation mid-search cannot mix a query
        # vector of one model with the collection of another, nor one version's memories with
        # another's.
        vectors, embed, memory_version = self.vectors, self.embed, self.memory_version
        version = await self.repo.index_version(user_id)
        if version is None:
            return None
        depth = max(limit, self.settings.retrieval_candidates)

        async def by_vector() -> list[tuple[str, float]]:
            [vector] = await embed([query])
            return await vectors.search(user_id, vector, depth, filters)

        async def by_bm25() -> list[tuple[str, float]]:
            idx = await self._user_index(user_id, version, memory_version)
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
        rows = await self.repo.memories_by_ids(user_id, [i for i, _ in head], memory_version)
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
    memory_version: int = 1  # the memory entries it indexes
    extraction: dict | None = None  # how that memory version was built (None: the service)


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
        # Generations retired by this replica whose vectors are not dropped yet: collection.
        self._pending_drop: dict[int, str] = {}
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
            row["generation"],
            row["embedding_model"],
            row["dim"],
            row["status"],
            store,
            embed,
            served,
            row["memory_version"],
            row["extraction"],
        )

    async def _refresh_generations(self) -> None:
        async with self._gen_lock:
            rows = await self.pool.fetch(
                "SELECT generation, embedding_model, dim, collection, status, memory_version,"
                " extraction FROM vector_generations WHERE status <> 'retired'"
                " ORDER BY generation"
            )
            gens = {r["generation"]: await self._generation(r) for r in rows}
            self.generations = gens
            active = next((g for g in gens.values() if g.status == "active"), None)
            r = self.retriever
            if active is not None and (
                r.vectors is not active.store
                or r.embed != active.embed
                or r.memory_version != active.memory_version
            ):
                # One synchronous step: searches read (store, embed, memory version) together.
                r.vectors, r.embed, r.memory_version = (
                    active.store,
                    active.embed,
                    active.memory_version,
                )
                logger.info(
                    "searching index generation %s (%s, memory version %s)",
                    active.number,
                    active.model,
                    active.memory_version,
                )

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
        """Embed into `g` the entries of its memory version it lacks (new or changed since it
        was built)."""
        rows = await self.pool.fetch(
            "SELECT e.id::text AS id, e.user_id, e.session_id, e.ts, e.speaker, e.index_text,"
            " e.updated_at FROM memory_entries e WHERE e.version=$3 AND NOT EXISTS (SELECT 1"
            " FROM generation_members m WHERE m.generation=$1 AND m.entry_id=e.id) LIMIT $2",
            g.number,
            limit,
            g.memory_version,
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
        return await self._sweep(await self._known(generation), limit)

    async def _known(self, generation: int) -> _Generation:
        """A generation created by another replica may not be known here yet: look again."""
        if generation not in self.generations:
            await self._refresh_generations()
        if generation not in self.generations:
            raise ValueError(f"no live index generation {generation}")
        return self.generations[generation]

    async def mark_members(self, generation: int, items: list) -> None:
        """Record entries as embedded into `generation`, unless changed since they were read
        ((id, updated_at) pairs): a changed text is embedded again by the next sweep."""
        await self.pool.executemany(
            "INSERT INTO generation_members (generation, entry_id) SELECT $1, id"
            " FROM memory_entries WHERE id=$2::uuid AND updated_at=$3 ON CONFLICT DO NOTHING",
            [(generation, i, u) for i, u in items],
        )

    async def create_generation(self, model: str) -> dict:
        """A new generation for `model` (status building) indexing the active memory version,
        or the one already building for them, so a restarted rebuild continues where it was."""
        active = self._active()
        row = await self.pool.fetchrow(
            "SELECT generation, dim FROM vector_generations"
            " WHERE status='building' AND embedding_model=$1 AND memory_version=$2",
            model,
            active.memory_version,
        )
        if row is None:
            local = await self._local_model(model) if model != self.embedding_model else None
            dim = local.dim if local is not None else self.vectors.dim
            n = await self._insert_building(model, dim, active.memory_version, active.extraction)
            row = {"generation": n, "dim": dim}
        await self._drop_retired()
        await self._refresh_generations()
        return {
            "generation": row["generation"],
            "dim": row["dim"],
            "model": model,
            "memory_version": active.memory_version,
        }

    async def create_memory_version(self, extraction: dict, resume: int | None = None) -> dict:
        """A new memory version (for a re-extraction) and the generation that indexes it, with
        the active generation's embedding model; or, with `resume`, that generation if it is
        still building (a restarted job continues where it was)."""
        if resume is not None:
            row = await self.pool.fetchrow(
                "SELECT generation, embedding_model, dim, status, memory_version"
                " FROM vector_generations WHERE generation=$1",
                resume,
            )
            if row is None or row["status"] != "building":
                status = row["status"] if row else "unknown"
                raise ValueError(
                    f"generation {resume} is {status}, no longer building: start a new job"
                )
        else:
            active = self._active()
            async with self.pool.acquire() as conn, conn.transaction():
                version = await versions_repo.next_memory_version(conn)
                n = await self._insert_building(
                    active.model, active.dim, version, extraction, conn=conn
                )
            row = {
                "generation": n,
                "embedding_model": active.model,
                "dim": active.dim,
                "memory_version": version,
            }
        await self._drop_retired()
        await self._refresh_generations()
        return {
            "generation": row["generation"],
            "model": row["embedding_model"],
            "dim": row["dim"],
            "memory_version": row["memory_version"],
            "served": row["embedding_model"] == self.embedding_model,
        }

    async def _insert_building(
        self, model: str, dim: int, memory_version: int, extraction: dict | None, conn=None
    ) -> int:
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
                await stack.enter_async_context(conn.transaction())
            # Any other unfinished build is abandoned: one rebuild at a time.
            abandoned = await conn.fetch(
                "UPDATE vector_generations SET status='retired' WHERE status='building'"
                " RETURNING generation, collection"
            )
            n = await conn.fetchval(
                "SELECT COALESCE(max(generation), 0) + 1 FROM vector_generations"
            )
            await conn.execute(
                "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
                " status, memory_version, extraction) VALUES ($1, $2, $3, $4, 'building', $5, $6)",
                n,
                model,
                dim,
                f"{self.settings.qdrant_collection}__g{n}",
                memory_version,
                extraction,
            )
        for r in abandoned:
            logger.info("index generation %s abandoned for %s", r["generation"], n)
        self._pending_drop.update((r["generation"], r["collection"]) for r in abandoned)
        return n

    async def index_generation(self, generation: int, points: list[VectorPoint]) -> None:
        await (await self._known(generation)).store.upsert(points)

    async def delete_from_generation(self, generation: int, user_id: str, ids: list[str]) -> None:
        """Remove points of one user from one generation (a re-extraction redoing a session)."""
        if ids:
            await (await self._known(generation)).store.delete(user_id, ids)

    async def generation_missing(self, generation: int) -> int:
        """Entries of the generation's memory version that have no vector in it yet."""
        return await self.pool.fetchval(
            "SELECT count(*) FROM memory_entries e WHERE e.version = (SELECT memory_version"
            " FROM vector_generations WHERE generation=$1) AND NOT EXISTS (SELECT 1 FROM"
            " generation_members m WHERE m.generation=$1 AND m.entry_id=e.id)",
            generation,
        )

    async def activate_generation(self, generation: int) -> dict:
        """Make `generation` the one searched (its memory version the one served); the
        replaced one is kept for rollback. A generation being built must be complete: every
        entry of its version embedded, and (new memory version) every done message in it."""
        g = await self._known(generation)
        if g.status == "building" or not g.served:
            # A served generation that is live is kept current by every write; the others
            # are filled by their job and the sweep.
            missing = await self.generation_missing(generation)
            if missing:
                raise versions_repo.GenerationIncomplete(
                    f"generation {generation} still lacks {missing} entries"
                )
        return await self._switch(generation, ("building", "previous"))

    async def rollback_generation(self) -> dict:
        """One call: the previous generation (and its memory version) becomes active again,
        the active one previous. Messages processed meanwhile are queued for the worker, which
        writes their memories into the restored version."""
        prev = await self.pool.fetchval(
            "SELECT generation FROM vector_generations WHERE status='previous'"
        )
        if prev is None:
            raise ValueError("no previous index generation to roll back to")
        return await self._switch(prev, ("previous",))

    async def _switch(self, generation: int, allowed: tuple[str, ...]) -> dict:
        async with self.pool.acquire() as conn, conn.transaction():
            done = await versions_repo.switch(conn, generation, allowed)
        self._pending_drop.update(done.retired)
        dropped = await self._drop_retired()
        await self._refresh_generations()
        logger.info(
            "switched to index generation %s (memory version %s); requeued %s",
            generation,
            done.memory_version,
            done.requeued,
        )
        return {
            "active": generation,
            "memory_version": done.memory_version,
            "replaced": done.replaced,
            "requeued": done.requeued,
            "dropped": dropped,
            **self.generation_status(),
        }

    async def _drop_retired(self) -> list[int]:
        """A retired generation is no longer written to (nor erased from): drop its vectors,
        and the entries of memory versions no live generation indexes any more."""
        dropped = []
        for number, collection in sorted(self._pending_drop.items()):
            g = self.generations.get(number)
            store = g.store if g is not None else self.vectors.with_base(collection, 1)
            await store.drop_all()
            del self._pending_drop[number]
            dropped.append(number)
        removed = await versions_repo.drop_orphan_versions(self.pool)
        if removed:
            logger.info("dropped the entries of retired memory versions: %s", removed)
        return dropped

    def generation_status(self) -> dict:
        return {
            "generations": [
                {
                    "generation": g.number,
                    "model": g.model,
                    "dim": g.dim,
                    "status": g.status,
                    "memory_version": g.memory_version,
                    "extraction": g.extraction,
                }
                for g in sorted(self.generations.values(), key=lambda g: g.number)
            ]
        }

    async def _write_served(self, points: list[VectorPoint], memory_version: int) -> None:
        # Generations of the Embedder's model that index the entries' memory version take the
        # vectors as they are; the others embed the entry again with their own model (sweep),
        # because their membership row is gone. Other memory versions never see them.
        if not points:
            return
        for g in list(self.generations.values()):
            if g.served and g.status in LIVE and g.memory_version == memory_version:
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
        from serve_app.storage.links_repo import linked_memories

        links = await linked_memories(self.pool, user_id, [r["id"] for r in results], per_hit)
        wanted = sorted({lk["id"] for lst in links.values() for lk in lst})
        version = self.retriever.memory_version
        rows = await self.repo.memories_by_ids(user_id, wanted, version) if wanted else {}
        for r in results:
            r["linked"] = [
                {**rows[lk["id"]], "reason": lk["reason"], "link_score": lk["link_score"]}
                for lk in links.get(r["id"], [])
                if lk["id"] in rows
            ]

    async def index(self, points: list[VectorPoint], memory_version: int = 1) -> None:
        """Index entries of `memory_version` (the worker read it, under the switch lock, as
        the active one) into the generations that index that version."""
        if not any(g.memory_version == memory_version for g in self.generations.values()):
            await self._refresh_generations()  # switched by another replica a moment ago
        await self._write_served(points, memory_version)

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
                    ],
                    row["version"],
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
            for version in sorted({u.get("version", 1) for u in upserts}):
                await self._write_served(
                    [
                        VectorPoint(u["id"], v, user_id, u["session_id"], u["ts"], u["speaker"])
                        for u, v in zip(upserts, vectors, strict=True)
                        if u.get("version", 1) == version
                    ],
                    version,
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
            "memory_version": active.memory_version,
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
