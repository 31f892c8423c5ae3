"""MemoryIndex replica group: the Serve shell around serve_app.retrieval.memory_index.MemoryIndex,
the only component that talks to the vector store (search, edits, erasure, vector writes,
generations). It is the ingress of its own application (deployments/apps.py): POST /v1/search
is answered here (serve_app.api.search_app), no handle hop between the HTTP front and the
index. Queries are embedded here, in process: ONNX Runtime (the int8 graph by default) in a
worker thread, concurrent queries batched together; entries embedded here use the exact graph.
The other groups and the offline jobs call the rest by handle.
"""

from __future__ import annotations

import asyncio
import contextlib

from ray import serve

from deployments.handles import InProcess
from serve_app.api.search_app import create_search_app
from serve_app.api.services import Services, install
from serve_app.encoding import load_encoders
from serve_app.encoding.batcher import BatchingEncoder
from serve_app.encoding.heap import release_periodically
from serve_app.encoding.torch_encoder import Embedder
from serve_app.model.audit import AuditRecord
from serve_app.profiles import GroupResources
from serve_app.retrieval.memory_index import MemoryIndex
from serve_app.security.keys import admin_key_of
from serve_app.settings import Settings
from serve_app.storage.vectors import VectorPoint

# Searches allocate and free the query's activations, BM25 rebuilds and candidate arrays.
HEAP_RELEASE_S = 10.0


def _load_model(model: str) -> Embedder:
    # Queries and the catch-up sweep of a generation whose model the Embedder group does not
    # run; the bulk of a rebuild is embedded by the job's actor pool.
    return Embedder(model, "cpu", 1)


app = create_search_app(Settings())


@serve.ingress(app)
class MemoryIndexDeployment:
    async def __init__(self, settings_env: dict, replicas: int = 1) -> None:
        settings = Settings(**settings_env)
        model = settings.embedding_model
        queries, entries = await asyncio.to_thread(
            load_encoders,
            model,
            settings.query_encoder,
            settings.query_encoder_threads,
            settings.model_cache_dir,
        )
        self.queries = BatchingEncoder(queries.encode, cache_size=settings.query_cache_size)
        # Entries embedded here (edits, offline jobs' changes) are not repeated queries.
        self.entries = (
            self.queries if entries is queries else BatchingEncoder(entries.encode, cache_size=0)
        )
        self.core = await MemoryIndex.open(
            settings, model, queries.dim, self.entries.encode, _load_model, self.queries.encode
        )
        self.generations = self.core.generations
        # What POST /v1/search works with here: this replica's index, and its pool for keys.
        self.services = Services(
            settings=settings,
            memory_index=InProcess(self),
            worker=None,
            embedder=None,
            admin_key=admin_key_of(settings.admin_key, settings.data_dir),
            replicas=replicas,
            _pool=self.core.pool,
        )
        install(self.services)
        loop = asyncio.get_running_loop()
        self._maintenance = loop.create_task(self.generations.maintain())
        self._heap = loop.create_task(release_periodically(HEAP_RELEASE_S))

    # --- search (POST /v1/search here; MCP tools through the Ingress) and edits ----------

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
        return await self.core.search(
            user_id, query, limit, filters, strategy, expand_links, links_per_hit, explain
        )

    async def update_memory(
        self, user_id: str, memory_id: str, patch: dict, audit: AuditRecord | None = None
    ) -> dict | None:
        return await self.core.update_memory(user_id, memory_id, patch, audit)

    async def delete_memory(
        self, user_id: str, memory_id: str, audit: AuditRecord | None = None
    ) -> bool:
        return await self.core.delete_memory(user_id, memory_id, audit)

    async def delete_user(self, user_id: str, audit: AuditRecord | None = None) -> bool:
        return await self.core.delete_user(user_id, audit)

    async def ready(self) -> dict:
        return {**await self.core.ready(), "query_encoding": dict(self.queries.stats)}

    # --- vector writes (IngestWorker, offline jobs) -----------------------------------------

    async def index(self, points: list[VectorPoint], memory_version: int = 1) -> None:
        await self.core.index(points, memory_version)

    async def apply_vector_changes(
        self, user_id: str, upserts: list[dict], deletes: list[str]
    ) -> None:
        await self.core.apply_vector_changes(user_id, upserts, deletes)

    async def neighbours(
        self, user_id: str, ids: list[str], depth: int
    ) -> dict[str, list[tuple[str, float]]]:
        return await self.core.neighbours(user_id, ids, depth)

    async def count_vectors(self, user_id: str) -> int:
        return await self.core.count_vectors(user_id)

    # --- index generations (offline jobs, Ingress) ------------------------------------------

    def generation_status(self) -> dict:
        return self.generations.status()

    async def create_generation(self, model: str) -> dict:
        return await self.generations.create(model)

    async def create_memory_version(self, extraction: dict, resume: int | None = None) -> dict:
        return await self.generations.create_memory_version(extraction, resume)

    async def index_generation(self, generation: int, points: list[VectorPoint]) -> None:
        await self.generations.index(generation, points)

    async def mark_members(self, generation: int, items: list) -> None:
        await self.generations.mark_members(generation, items)

    async def delete_from_generation(self, generation: int, user_id: str, ids: list[str]) -> None:
        await self.generations.delete_points(generation, user_id, ids)

    async def sweep_generation(self, generation: int, limit: int = 256) -> int:
        return await self.generations.sweep_generation(generation, limit)

    async def generation_missing(self, generation: int) -> int:
        return await self.generations.missing(generation)

    async def activate_generation(self, generation: int) -> dict:
        return await self.generations.activate(generation)

    async def rollback_generation(self) -> dict:
        return await self.generations.rollback()

    def __del__(self) -> None:
        # Release the local-mode file lock promptly when the replica goes away.
        with contextlib.suppress(Exception):
            self._maintenance.cancel()
            self._heap.cancel()
        with contextlib.suppress(Exception):
            self.core.vectors.client._client.close()  # type: ignore[attr-defined]


def build_memory_index(group: GroupResources, settings_env: dict, embedded: bool):
    opts = group.deployment_options()
    if embedded:
        # Qdrant local mode holds a file lock: exactly one replica may own the directory.
        opts.pop("autoscaling_config", None)
        opts["num_replicas"] = 1
    return (
        serve.deployment(MemoryIndexDeployment)
        .options(name="MemoryIndex", **opts)
        .bind(settings_env, group.max_replicas)
    )
