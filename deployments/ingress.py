"""Ingress: the FastAPI routes of HTTP API v1, and nothing else. Validation is
serve_app.api.models, errors serve_app.api.errors; the work is done by PostgreSQL (writes before
answering), the MemoryIndex and IngestWorker replica groups and the JobOrchestrator."""

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from ray import serve

from jobs import submit as job_submit
from serve_app.api import ids, intake, readiness
from serve_app.api.errors import ERRORS, ApiError, install_error_handling, not_found
from serve_app.api.models import (
    ID_PATTERN,
    AddMemoriesRequest,
    AddMemoriesResponse,
    Deleted,
    JobRequest,
    JobStatus,
    Memory,
    MemoryList,
    MemoryPatch,
    SearchRequest,
    SearchResponse,
    SessionStatus,
)
from serve_app.api.pagination import decode_cursor, page
from serve_app.maintenance.orchestration import JobOrchestrator
from serve_app.profiles import GroupResources
from serve_app.settings import Settings
from serve_app.storage.health import server_version
from serve_app.storage.llm_tasks_repo import LLMTasksRepo
from serve_app.storage.postgres import Repository, create_pool

UserId = Annotated[str, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
SessionId = Annotated[str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="memserve", version="1", description="Long-term memory for LLM agents.")
    install_error_handling(app, settings.max_body_bytes)
    return app


app = create_app(Settings())


def _no_memory(memory_id: str) -> ApiError:
    return not_found("unknown_memory", f"memory {memory_id} not found for this user")


def _no_session(session_id: str) -> ApiError:
    return not_found("unknown_session", f"session {session_id!r} not found")


@serve.ingress(app)
class IngressDeployment:
    def __init__(self, settings_env: dict, memory_index, worker, embedder) -> None:
        self.settings = Settings(**settings_env)
        self.memory_index = memory_index
        self.worker = worker
        self.embedder = embedder
        self._pool = None
        self._pool_lock = asyncio.Lock()
        self.jobs = JobOrchestrator(
            repo=self._repo,
            submit=job_submit.submit,
            submission_status=job_submit.ray_status,
            rollback=lambda: self.memory_index.rollback_generation.remote(),
            extraction_config=lambda: self.worker.extraction_config.remote(),
        )

    async def _repo(self) -> Repository:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await create_pool(
                        self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
                    )
        return Repository(self._pool)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        async def pg() -> dict:
            return await server_version((await self._repo()).pool)

        checks = await asyncio.gather(
            readiness.check("postgresql", pg()),
            readiness.check("memory_index", self.memory_index.ready.remote()),
            readiness.check("embedder", self.embedder.info.remote()),
            readiness.check("ingest_worker", self.worker.ready.remote()),
        )
        status, body = readiness.report(dict(checks))
        return JSONResponse(status_code=status, content=body)

    @app.post(
        "/v1/memories",
        status_code=202,
        response_model=AddMemoriesResponse,
        responses={**ERRORS, 200: {"model": AddMemoriesResponse}},
    )
    async def add_memories(self, req: AddMemoriesRequest) -> JSONResponse:
        messages = intake.new_messages(req, datetime.now(UTC))
        repo = await self._repo()
        new_ids = await repo.add_messages(req.user_id, req.session_id, messages, req.metadata)
        message_ids = [m.message_id for m in messages]
        if req.flush or req.wait:
            # Waiting for "searchable" implies flushing the session's buffers: messages can
            # otherwise sit in a topic buffer until more of the conversation arrives.
            # An explicit flush ends the session's stretch: also ask for its summary.
            await self.worker.flush.remote(req.user_id, req.session_id, summarize=req.flush)
        else:
            self.worker.kick.remote()
        body = AddMemoriesResponse(
            session_id=req.session_id, accepted=len(new_ids), message_ids=message_ids
        )
        if not req.wait:
            return JSONResponse(status_code=202, content=body.model_dump(exclude_none=True))
        # 200 once every message of the request is searchable; 202 if the wait timed out.
        body.pending = await intake.wait_processed(
            repo, req.user_id, req.session_id, message_ids, self.settings.wait_timeout_s
        )
        return JSONResponse(
            status_code=200 if body.pending == 0 else 202, content=body.model_dump()
        )

    @app.post("/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, req: SearchRequest) -> SearchResponse:
        filters = req.filters.model_dump() if req.filters else {}
        args = (req.user_id, req.query, req.limit, filters, req.strategy)
        if req.expand_links:
            res = await self.memory_index.search.remote(*args, expand_links=True)
        else:
            res = await self.memory_index.search.remote(*args)
        if res is None:
            raise not_found("unknown_user", f"user {req.user_id!r} has no memories")
        return SearchResponse.from_search(res, req.expand_links)

    @app.get("/v1/memories", response_model=MemoryList, responses=ERRORS)
    async def list_memories(
        self,
        user_id: UserId,
        session_id: SessionId = None,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None, max_length=512),
    ) -> MemoryList:
        repo = await self._repo()
        after = decode_cursor(cursor) if cursor else None
        await ids.require_user(repo, user_id)
        rows, next_cursor = page(
            await repo.list_memories(user_id, session_id, limit + 1, after), limit
        )
        return MemoryList(memories=[Memory.from_row(r) for r in rows], next_cursor=next_cursor)

    @app.get("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
    async def get_memory(self, memory_id: str, user_id: UserId) -> Memory:
        repo = await self._repo()
        row = await repo.get_memory(user_id, ids.memory_id(memory_id))
        if row is None:
            raise _no_memory(memory_id)
        return Memory.from_row(row)

    @app.patch("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
    async def patch_memory(self, memory_id: str, patch: MemoryPatch, user_id: UserId) -> Memory:
        row = await self.memory_index.update_memory.remote(
            user_id, ids.memory_id(memory_id), patch.model_dump(exclude_none=True)
        )
        if row is None:
            raise _no_memory(memory_id)
        return Memory.from_row(row)

    @app.delete("/v1/memories/{memory_id}", response_model=Deleted, responses=ERRORS)
    async def delete_memory(self, memory_id: str, user_id: UserId) -> Deleted:
        mid = ids.memory_id(memory_id)
        if not await self.memory_index.delete_memory.remote(user_id, mid):
            raise _no_memory(memory_id)
        return Deleted(id=mid)

    @app.delete("/v1/users/{user_id}", response_model=Deleted, responses=ERRORS)
    async def delete_user(self, user_id: str) -> Deleted:
        if not await self.memory_index.delete_user.remote(user_id):
            raise not_found("unknown_user", f"user {user_id!r} not found")
        return Deleted(id=user_id)

    @app.get("/v1/sessions/{session_id}", response_model=SessionStatus, responses=ERRORS)
    async def get_session(self, session_id: str, user_id: UserId) -> SessionStatus:
        repo = await self._repo()
        st = await repo.session_status(user_id, session_id)
        if st is None:
            raise _no_session(session_id)
        llm = await LLMTasksRepo.session_status(repo.pool, user_id, session_id)
        return SessionStatus.from_status(user_id, session_id, st, llm)

    @app.post("/v1/sessions/{session_id}/summary", status_code=202, responses=ERRORS)
    async def request_summary(self, session_id: str, user_id: UserId) -> JSONResponse:
        """Flush the session and make its summary (needs an LLM backend)."""
        out = await self.worker.summarize.remote(user_id, session_id)
        if out is not None and not out.get("queued"):
            raise ApiError(409, "no_llm", out.get("reason", "summaries need an LLM backend"))
        return self._session_accepted(session_id, out)

    @app.post("/v1/sessions/{session_id}/retry", status_code=202, responses=ERRORS)
    async def retry_failed(self, session_id: str, user_id: UserId) -> JSONResponse:
        """Queue the session's failed LLM extractions again."""
        out = await self.worker.retry_failed.remote(user_id, session_id)
        return self._session_accepted(session_id, out)

    @staticmethod
    def _session_accepted(session_id: str, out: dict | None) -> JSONResponse:
        if out is None:
            raise _no_session(session_id)
        return JSONResponse(status_code=202, content=out)

    @app.post("/v1/jobs", status_code=202, response_model=JobStatus, responses=ERRORS)
    async def start_job(self, req: JobRequest) -> JSONResponse:
        status, body = await self.jobs.start(req)
        return JSONResponse(status_code=status, content=body)

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=ERRORS)
    async def get_job(self, job_id: str) -> JSONResponse:
        return JSONResponse(content=await self.jobs.status(ids.job_id(job_id)))

    @app.get("/v1/generations", responses=ERRORS)
    async def generations(self) -> JSONResponse:
        """Index generations: model, status and the memory version each one indexes (with how
        that version was built); the active one is what searches and memory reads serve."""
        return JSONResponse(content=await self.memory_index.generation_status.remote())


def build_ingress(group: GroupResources, settings_env: dict, memory_index, worker, embedder):
    return (
        serve.deployment(IngressDeployment)
        .options(name="Ingress", **group.deployment_options())
        .bind(settings_env, memory_index, worker, embedder)
    )
