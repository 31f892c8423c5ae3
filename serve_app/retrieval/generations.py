"""Index generations: create, fill (catch-up sweep), activate, roll back, retire.

A generation is one set of Qdrant collections filled by one embedding model, indexing one
memory version. PostgreSQL says which generation is active (serve_app/storage/
generations_repo.py); every process holding an `IndexGenerations` follows it (`refresh`, each
second from `maintain` and after every switch) and hands the active one's `SearchTarget` to
search. The Embedder group's model is "served": writes of new entries reach its generations
directly. A generation of another model is embedded with a model loaded in this process, by the
sweep, from what `generation_members` says it lacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from serve_app.retrieval.hybrid import Embed, SearchTarget
from serve_app.storage import generations_repo, memory_versions_repo
from serve_app.storage.vector_stores import VectorStore
from serve_app.storage.vectors import VectorPoint

logger = logging.getLogger("ray.serve")

# How often changed vector shards are compacted (deleted and replaced points vacuumed).
COMPACT_EVERY_S = 30.0


class LocalModel(Protocol):
    """An embedding model loaded in this process (deployments.embedder.Embedder)."""

    dim: int

    def encode(self, texts: Sequence[str]) -> Sequence[Sequence[float]]: ...


@dataclass
class Generation:
    """One vector-index generation: its collections and the model its vectors come from."""

    number: int
    model: str
    dim: int
    status: str  # building | active | previous
    store: VectorStore
    embed: Embed  # entries, with this generation's model
    served: bool  # True when the Embedder group runs this model
    memory_version: int = 1  # the memory entries it indexes
    extraction: dict | None = None  # how that memory version was built (None: the service)
    embed_query: Embed | None = None  # queries, when not `embed`

    @property
    def target(self) -> SearchTarget:
        return SearchTarget(self.store, self.embed_query or self.embed, self.memory_version)

    def describe(self) -> dict:
        return {
            "generation": self.number,
            "model": self.model,
            "dim": self.dim,
            "status": self.status,
            "memory_version": self.memory_version,
            "extraction": self.extraction,
        }


class IndexGenerations:
    """The generations this process knows, and their lifecycle."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        vectors: VectorStore,
        served_model: str,
        served_embed: Embed,
        load_model: Callable[[str], LocalModel],
        retarget: Callable[[SearchTarget], None],
        served_query_embed: Embed | None = None,
    ) -> None:
        self.pool = pool
        self.vectors = vectors  # generation 0's collections; the others share its client
        self.served_model = served_model
        self.served_embed = served_embed  # entries
        self.served_query_embed = served_query_embed or served_embed
        self.load_model = load_model
        self.retarget = retarget
        self.serving = SearchTarget(vectors, self.served_query_embed, 1)
        self.generations: dict[int, Generation] = {}
        self._local_models: dict[str, LocalModel] = {}
        self._lock = asyncio.Lock()
        # Generations retired by this process whose vectors are not dropped yet: collection.
        self._pending_drop: dict[int, str] = {}
        self._compacted_at = float("-inf")

    async def start(self) -> None:
        await generations_repo.ensure_first(
            self.pool, self.served_model, self.vectors.dim, self.vectors.base
        )
        await self.refresh()

    # --- following PostgreSQL ---------------------------------------------------------------

    async def _local_model(self, model: str) -> LocalModel:
        """A model other than the Embedder group's, loaded here (for queries and the catch-up
        sweep; the bulk of a rebuild is embedded by the job's actor pool)."""
        if model not in self._local_models:
            self._local_models[model] = await asyncio.to_thread(self.load_model, model)
        return self._local_models[model]

    async def _generation(self, row: asyncpg.Record) -> Generation:
        old = self.generations.get(row["generation"])
        if old is not None:
            old.status = row["status"]
            return old
        served = row["embedding_model"] == self.served_model
        embed_query = None
        if served:
            embed, embed_query = self.served_embed, self.served_query_embed
        else:
            local = await self._local_model(row["embedding_model"])

            async def embed(texts: list[str], _m: LocalModel = local):
                return list(await asyncio.to_thread(_m.encode, texts))

        store = (
            self.vectors
            if row["collection"] == self.vectors.base
            else self.vectors.with_base(row["collection"], row["dim"])
        )
        return Generation(
            row["generation"],
            row["embedding_model"],
            row["dim"],
            row["status"],
            store,
            embed,
            served,
            row["memory_version"],
            row["extraction"],
            embed_query,
        )

    async def refresh(self) -> None:
        async with self._lock:
            rows = await generations_repo.live(self.pool)
            self.generations = {r["generation"]: await self._generation(r) for r in rows}
            active = next((g for g in self.generations.values() if g.status == "active"), None)
            if active is not None and active.target != self.serving:
                self.serving = active.target
                self.retarget(self.serving)
                logger.info(
                    "searching index generation %s (%s, memory version %s)",
                    active.number,
                    active.model,
                    active.memory_version,
                )

    def active(self) -> Generation:
        return next(g for g in self.generations.values() if g.status == "active")

    async def known(self, generation: int) -> Generation:
        """A generation created by another process may not be known here yet: look again."""
        if generation not in self.generations:
            await self.refresh()
        if generation not in self.generations:
            raise ValueError(f"no live index generation {generation}")
        return self.generations[generation]

    async def maintain_once(self) -> None:
        """Follow PostgreSQL, then catch up the live generations of other models."""
        await self.refresh()
        for g in list(self.generations.values()):
            # A building generation is filled by its rebuild job, which sweeps it at the end
            # (sweep_generation); sweeping it here too would embed twice.
            if not g.served and g.status != "building":
                await self.sweep(g)
        await self.compact()

    async def compact(self, every_s: float = COMPACT_EVERY_S) -> int:
        """Compact the changed stores of every generation, at most once per `every_s`;
        returns how many were compacted."""
        now = time.monotonic()
        if now - self._compacted_at < every_s:
            return 0
        self._compacted_at = now
        done = 0
        for g in list(self.generations.values()):
            done += await g.store.compact()
        return done

    async def maintain(self) -> None:
        """Forever, each second: `maintain_once`."""
        while True:
            try:
                await self.maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("index generation maintenance failed")
            await asyncio.sleep(1.0)

    def status(self) -> dict:
        return {
            "generations": [
                g.describe() for g in sorted(self.generations.values(), key=lambda g: g.number)
            ]
        }

    # --- filling ----------------------------------------------------------------------------

    async def sweep(self, g: Generation, limit: int = 256) -> int:
        """Embed into `g` the entries of its memory version it lacks (new or changed since it
        was built); returns how many."""
        rows = await generations_repo.unindexed_entries(
            self.pool, g.number, g.memory_version, limit
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
        return await self.sweep(await self.known(generation), limit)

    async def mark_members(self, generation: int, items: list) -> None:
        await generations_repo.mark_members(self.pool, generation, items)

    async def index(self, generation: int, points: list[VectorPoint]) -> None:
        await (await self.known(generation)).store.upsert(points)

    async def delete_points(self, generation: int, user_id: str, ids: list[str]) -> None:
        if ids:
            await (await self.known(generation)).store.delete(user_id, ids)

    async def missing(self, generation: int) -> int:
        return await generations_repo.missing_count(self.pool, generation)

    async def write_served(self, points: list[VectorPoint], memory_version: int) -> None:
        """Index entries of `memory_version` into the generations of the Embedder's model that
        index it. The others embed the entry again with their own model (sweep), because their
        membership row is gone; other memory versions never see them."""
        if not points:
            return
        for g in list(self.generations.values()):
            if g.served and g.memory_version == memory_version:
                await g.store.upsert(points)

    async def delete_everywhere(self, user_id: str, ids: list[str]) -> None:
        for g in self.generations.values():
            await g.store.delete(user_id, ids)

    async def delete_user(self, user_id: str) -> None:
        for g in self.generations.values():
            await g.store.delete_user(user_id)

    # --- creating ---------------------------------------------------------------------------

    async def create(self, model: str) -> dict:
        """A new generation for `model` (status building) indexing the active memory version,
        or the one already building for them, so a restarted rebuild continues where it was."""
        active = self.active()
        row = await generations_repo.building(self.pool, model, active.memory_version)
        if row is not None:
            n, dim = row["generation"], row["dim"]
        else:
            local = await self._local_model(model) if model != self.served_model else None
            dim = local.dim if local is not None else self.vectors.dim
            n, _ = await self._new_building(model, dim, active.memory_version, active.extraction)
        await self._drop_retired()
        await self.refresh()
        return {
            "generation": n,
            "dim": dim,
            "model": model,
            "memory_version": active.memory_version,
        }

    async def create_memory_version(self, extraction: dict, resume: int | None = None) -> dict:
        """A new memory version (for a re-extraction) and the generation that indexes it, with
        the active generation's embedding model; or, with `resume`, that generation if it is
        still building (a restarted job continues where it was)."""
        if resume is not None:
            row = await generations_repo.get(self.pool, resume)
            if row is None or row["status"] != "building":
                status = row["status"] if row else "unknown"
                raise ValueError(
                    f"generation {resume} is {status}, no longer building: start a new job"
                )
            n, model, dim, version = (
                row["generation"],
                row["embedding_model"],
                row["dim"],
                row["memory_version"],
            )
        else:
            active = self.active()
            model, dim = active.model, active.dim
            n, version = await self._new_building(model, dim, None, extraction)
        await self._drop_retired()
        await self.refresh()
        return {
            "generation": n,
            "model": model,
            "dim": dim,
            "memory_version": version,
            "served": model == self.served_model,
        }

    async def _new_building(
        self, model: str, dim: int, memory_version: int | None, extraction: dict | None
    ) -> tuple[int, int]:
        """A 'building' generation (any other unfinished build is abandoned), indexing
        `memory_version`, or a new memory version when None; returns (generation, version)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if memory_version is None:
                memory_version = await memory_versions_repo.next_memory_version(conn)
            n, abandoned = await generations_repo.insert_building(
                conn, model, dim, self.vectors.base, memory_version, extraction
            )
        for number, _ in abandoned:
            logger.info("index generation %s abandoned for %s", number, n)
        self._pending_drop.update(abandoned)
        return n, memory_version

    # --- switching --------------------------------------------------------------------------

    async def activate(self, generation: int) -> dict:
        """Make `generation` the one searched (its memory version the one served); the
        replaced one is kept for rollback. A generation being built must be complete: every
        entry of its version embedded, and (new memory version) every done message in it."""
        g = await self.known(generation)
        if g.status == "building" or not g.served:
            # A served generation that is live is kept current by every write; the others
            # are filled by their job and the sweep.
            missing = await self.missing(generation)
            if missing:
                raise generations_repo.GenerationIncomplete(
                    f"generation {generation} still lacks {missing} entries"
                )
        return await self._switch(generation, ("building", "previous"))

    async def rollback(self) -> dict:
        """One call: the previous generation (and its memory version) becomes active again,
        the active one previous. Messages processed meanwhile are queued for the worker, which
        writes their memories into the restored version."""
        prev = await generations_repo.previous(self.pool)
        if prev is None:
            raise ValueError("no previous index generation to roll back to")
        return await self._switch(prev, ("previous",))

    async def _switch(self, generation: int, allowed: tuple[str, ...]) -> dict:
        async with self.pool.acquire() as conn, conn.transaction():
            done = await generations_repo.switch(conn, generation, allowed)
        self._pending_drop.update(done.retired)
        dropped = await self._drop_retired()
        await self.refresh()
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
            **self.status(),
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
        removed = await memory_versions_repo.drop_orphan_versions(self.pool)
        if removed:
            logger.info("dropped the entries of retired memory versions: %s", removed)
        return dropped
