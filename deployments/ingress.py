"""Ingress: a thin FastAPI router. Validation lives in serve_app.api_models; the work is done by
PostgreSQL (writes before answering) and the MemoryIndex / IngestWorker replica groups."""

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api_models import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    Deleted,
    ErrorResponse,
    JobRequest,
    JobStatus,
    LinkedMemory,
    Memory,
    MemoryList,
    MemoryPatch,
    MessageCounts,
    PipelineCounts,
    ScoredMemory,
    SearchRequest,
    SearchResponse,
    SessionStatus,
    TokenCounts,
)
from serve_app.jobs import store as job_store
from serve_app.jobs import submit as job_submit
from serve_app.profiles import GroupResources
from serve_app.settings import Settings
from serve_app.storage.llm_tasks_repo import LLMTasksRepo
from serve_app.storage.postgres import NewMessage, Repository, create_pool

logger = logging.getLogger("ray.serve")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$"
ERRORS = {
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class BodyLimit:
    """Refuse bodies over the limit with 413, by Content-Length or by counting what arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _send_413(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "body_too_large", "message": f"request body exceeds {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, code: str, message: str, details: list | None = None) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="memserve",
        version="1",
        description="Long-term memory for LLM agents.",
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in e.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'] if p != 'body')}: {d['msg']}" for d in details
        )
        return _error(422, "invalid_request", summary or "invalid request", details)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, "http_error", str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        # A store or replica that fails is a server-side outage, not the caller's fault.
        logger.exception("request failed")
        return _error(503, "unavailable", f"service temporarily unavailable: {type(e).__name__}")

    return app


app = create_app(Settings())


def _encode_cursor(ts: datetime, memory_id: str) -> str:
    raw = json.dumps([ts.isoformat(), memory_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, memory_id = json.loads(raw)
        return datetime.fromisoformat(ts), str(uuid.UUID(memory_id))
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned") from None


def _memory_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(422, "invalid_memory_id", f"memory id {value!r} is not a UUID") from None


def _job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(422, "invalid_job_id", f"job id {value!r} is not a UUID") from None


@serve.ingress(app)
class IngressDeployment:
    def __init__(self, settings_env: dict, router, worker, embedder) -> None:
        self.settings = Settings(**settings_env)
        self.router = router
        self.worker = worker
        self.embedder = embedder
        self._pool = None
        self._pool_lock = asyncio.Lock()

    async def _repo(self) -> Repository:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await create_pool(
                        self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
                    )
        return Repository(self._pool)

    async def _require_user(self, repo: Repository, user_id: str) -> None:
        if not await repo.user_exists(user_id):
            raise ApiError(404, "unknown_user", f"user {user_id!r} has no memories")

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        async def check(name: str, coro) -> tuple[str, dict]:
            try:
                detail = await asyncio.wait_for(coro, timeout=5)
                return name, {"ok": True, **(detail or {})}
            except Exception as e:
                return name, {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}

        async def pg() -> dict:
            repo = await self._repo()
            version = await repo.pool.fetchval("SHOW server_version")
            return {"server_version": version}

        checks = dict(
            await asyncio.gather(
                check("postgresql", pg()),
                check("retrieval_router", self.router.ready.remote()),
                check("embedder", self.embedder.info.remote()),
                check("ingest_worker", self.worker.ready.remote()),
            )
        )
        # The router's readiness includes Qdrant's answer.
        checks["qdrant"] = {
            "ok": checks["retrieval_router"]["ok"],
            "mode": checks["retrieval_router"].get("qdrant"),
        }
        worker = checks["ingest_worker"]
        checks["compressor"] = worker.pop(
            "compression", {"ok": False, "error": "ingest worker did not answer"}
        )
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse(
            status_code=200 if ok else 503,
            content={"status": "ready" if ok else "not_ready", "checks": checks},
        )

    @app.post(
        "/v1/memories",
        status_code=202,
        response_model=AddMemoriesResponse,
        responses={**ERRORS, 200: {"model": AddMemoriesResponse}},
    )
    async def add_memories(self, req: AddMemoriesRequest) -> JSONResponse:
        now = datetime.now(UTC)
        messages = [
            NewMessage(
                message_id=m.message_id or str(uuid.uuid4()),
                role=m.role,
                name=m.name,
                content=m.content,
                ts=m.timestamp or now,  # type: ignore[arg-type]
                ts_provided=m.timestamp is not None,
                metadata=req.metadata or {},
            )
            for m in req.messages
        ]
        repo = await self._repo()
        new_ids = await repo.add_messages(req.user_id, req.session_id, messages, req.metadata)
        ids = [m.message_id for m in messages]
        if req.flush or req.wait:
            # Waiting for "searchable" implies flushing the session's buffers: messages can
            # otherwise sit in a topic buffer until more of the conversation arrives.
            # An explicit flush ends the session's stretch: also ask for its summary.
            await self.worker.flush.remote(req.user_id, req.session_id, summarize=req.flush)
        else:
            self.worker.kick.remote()
        body = AddMemoriesResponse(
            session_id=req.session_id, accepted=len(new_ids), message_ids=ids
        )
        if not req.wait:
            return JSONResponse(status_code=202, content=body.model_dump(exclude_none=True))
        # 200 once every message of the request is searchable; 202 if the wait timed out.
        body.pending = await self._wait_processed(repo, req.user_id, req.session_id, ids)
        return JSONResponse(
            status_code=200 if body.pending == 0 else 202, content=body.model_dump()
        )

    async def _wait_processed(
        self, repo: Repository, user_id: str, session_id: str, ids: list[str]
    ) -> int:
        deadline = time.monotonic() + self.settings.wait_timeout_s
        delay = 0.02
        while True:
            pending = await repo.count_unfinished(user_id, session_id, ids)
            if pending == 0 or time.monotonic() > deadline:
                return pending
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    @app.post("/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, req: SearchRequest) -> SearchResponse:
        filters = req.filters.model_dump() if req.filters else {}
        if req.expand_links:
            call = self.router.search.remote(
                req.user_id, req.query, req.limit, filters, req.strategy, expand_links=True
            )
        else:
            call = self.router.search.remote(
                req.user_id, req.query, req.limit, filters, req.strategy
            )
        res = await call
        if res is None:
            raise ApiError(404, "unknown_user", f"user {req.user_id!r} has no memories")
        return SearchResponse(
            results=[
                ScoredMemory(
                    **Memory.from_row(r).model_dump(),
                    score=r["score"],
                    linked=(
                        [
                            LinkedMemory(
                                **Memory.from_row(x).model_dump(),
                                reason=x["reason"],
                                link_score=x["link_score"],
                            )
                            for x in r.get("linked", [])
                        ]
                        if req.expand_links
                        else None
                    ),
                )
                for r in res["results"]
            ],
            took_ms=res["took_ms"],
        )

    @app.get("/v1/memories", response_model=MemoryList, responses=ERRORS)
    async def list_memories(
        self,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
        session_id: str | None = Query(None, min_length=1, max_length=128, pattern=ID_PATTERN),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None, max_length=512),
    ) -> MemoryList:
        repo = await self._repo()
        after = _decode_cursor(cursor) if cursor else None
        await self._require_user(repo, user_id)
        rows = await repo.list_memories(user_id, session_id, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        return MemoryList(
            memories=[Memory.from_row(r) for r in rows],
            next_cursor=_encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if more else None,
        )

    @app.get("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
    async def get_memory(
        self,
        memory_id: str,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> Memory:
        repo = await self._repo()
        row = await repo.get_memory(user_id, _memory_id(memory_id))
        if row is None:
            raise ApiError(404, "unknown_memory", f"memory {memory_id} not found for this user")
        return Memory.from_row(row)

    @app.patch("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
    async def patch_memory(
        self,
        memory_id: str,
        patch: MemoryPatch,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> Memory:
        row = await self.router.update_memory.remote(
            user_id, _memory_id(memory_id), patch.model_dump(exclude_none=True)
        )
        if row is None:
            raise ApiError(404, "unknown_memory", f"memory {memory_id} not found for this user")
        return Memory.from_row(row)

    @app.delete("/v1/memories/{memory_id}", response_model=Deleted, responses=ERRORS)
    async def delete_memory(
        self,
        memory_id: str,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> Deleted:
        mid = _memory_id(memory_id)
        if not await self.router.delete_memory.remote(user_id, mid):
            raise ApiError(404, "unknown_memory", f"memory {memory_id} not found for this user")
        return Deleted(id=mid)

    @app.delete("/v1/users/{user_id}", response_model=Deleted, responses=ERRORS)
    async def delete_user(self, user_id: str) -> Deleted:
        if not await self.router.delete_user.remote(user_id):
            raise ApiError(404, "unknown_user", f"user {user_id!r} not found")
        return Deleted(id=user_id)

    @app.get("/v1/sessions/{session_id}", response_model=SessionStatus, responses=ERRORS)
    async def get_session(
        self,
        session_id: str,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> SessionStatus:
        repo = await self._repo()
        st = await repo.session_status(user_id, session_id)
        if st is None:
            raise ApiError(404, "unknown_session", f"session {session_id!r} not found")
        s = st["session"]
        ratio = (
            round(s["compressed_tokens"] / s["raw_tokens"], 4)
            if s["compressed_tokens"] and s["raw_tokens"]
            else None
        )
        return SessionStatus(
            session_id=session_id,
            user_id=user_id,
            messages=MessageCounts(**st["counts"]),
            memories=st["memories"],
            tokens=TokenCounts(
                raw=s["raw_tokens"],
                compressed=s["compressed_tokens"],
                llm_input=s["llm_input_tokens"],
                llm_output=s["llm_output_tokens"],
                llm_calls=s["llm_calls"],
                compression_ratio=ratio,
            ),
            pipeline=PipelineCounts(segments=s["segments"], flushes=s["flushes"]),
            llm=await LLMTasksRepo.session_status(repo.pool, user_id, session_id),
            summary=s["summary"],
            metadata=s["metadata"] or {},
            created_at=s["created_at"],
            updated_at=s["updated_at"],
        )

    # --- offline jobs (serve_app/jobs) ------------------------------------------------------

    @app.post("/v1/jobs", status_code=202, response_model=JobStatus, responses=ERRORS)
    async def start_job(self, req: JobRequest) -> JSONResponse:
        repo = await self._repo()
        if req.user_id is not None:
            await self._require_user(repo, req.user_id)
        if req.kind == "rollback":
            job_id = await job_store.create_job_async(repo.pool, "rollback", None, {})
            try:
                result = await self.router.rollback_generation.remote()
            except ValueError as e:
                await job_store.fail_job_async(repo.pool, job_id, str(e))
                raise ApiError(409, "nothing_to_roll_back", str(e)) from None
            await repo.pool.execute(
                "UPDATE jobs SET status='succeeded', result=$2, done=1, total=1,"
                " started_at=now(), finished_at=now(), updated_at=now() WHERE id=$1::uuid",
                job_id,
                result,
            )
            return JSONResponse(status_code=200, content=await self._job_body(repo, job_id))
        if req.job_id is not None:
            row = await job_store.get_job_async(repo.pool, _job_id(req.job_id))
            if row is None:
                raise ApiError(404, "unknown_job", f"job {req.job_id} not found")
            if row["kind"] != req.kind:
                raise ApiError(422, "wrong_kind", f"job {req.job_id} is a {row['kind']} job")
            if row["status"] == "succeeded":
                raise ApiError(409, "job_finished", f"job {req.job_id} already succeeded")
            if row["status"] == "running":
                raise ApiError(409, "job_running", f"job {req.job_id} is running")
            job_id, user_id, params = row["id"], row["user_id"], row["params"]
            attempt = row["attempts"] + 1
            await repo.pool.execute(
                "UPDATE jobs SET status='pending', error=NULL, finished_at=NULL,"
                " updated_at=now() WHERE id=$1::uuid",
                job_id,
            )
        else:
            if req.kind == "reextract":
                await self._check_reextract(req.job_params())
            job_id = await job_store.create_job_async(
                repo.pool, req.kind, req.user_id, req.job_params()
            )
            user_id, params, attempt = req.user_id, req.job_params(), 0
        try:
            sid = await asyncio.to_thread(
                job_submit.submit, req.kind, job_id, user_id, params, attempt
            )
        except Exception as e:
            await job_store.fail_job_async(repo.pool, job_id, f"submission failed: {e}")
            raise
        await job_store.set_submission_async(repo.pool, job_id, sid)
        return JSONResponse(status_code=202, content=await self._job_body(repo, job_id))

    async def _check_reextract(self, params: dict) -> None:
        """Refuse up front what this service cannot do (e.g. a compression rate without the
        Compressor, another model without an OpenAI-compatible endpoint): 422, not a job that
        fails later."""
        from serve_app.jobs.reextraction import ReextractConfigError, resolve_spec

        cfg = await self.worker.extraction_config.remote()
        try:
            resolve_spec(params, cfg)
        except ReextractConfigError as e:
            raise ApiError(422, "invalid_job", str(e)) from None

    @app.get("/v1/generations", responses=ERRORS)
    async def generations(self) -> JSONResponse:
        """Index generations: model, status and the memory version each one indexes (with how
        that version was built); the active one is what searches and memory reads serve."""
        return JSONResponse(content=await self.router.generation_status.remote())

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=ERRORS)
    async def get_job(self, job_id: str) -> JSONResponse:
        repo = await self._repo()
        return JSONResponse(content=await self._job_body(repo, _job_id(job_id)))

    async def _job_body(self, repo: Repository, job_id: str) -> dict:
        row = await job_store.get_job_async(repo.pool, job_id)
        if row is None:
            raise ApiError(404, "unknown_job", f"job {job_id} not found")
        if row["status"] in ("pending", "running") and row["submission_id"]:
            # A driver that was stopped or crashed cannot say so itself: ask Ray.
            ray_status = await asyncio.to_thread(job_submit.ray_status, row["submission_id"])
            if ray_status in job_submit.DEAD:
                row["status"] = job_submit.DEAD[ray_status]
                await repo.pool.execute(
                    "UPDATE jobs SET status=$2, updated_at=now() WHERE id=$1::uuid"
                    " AND status IN ('pending', 'running')",
                    job_id,
                    row["status"],
                )
        return JobStatus(**row).model_dump(mode="json")

    @app.post("/v1/sessions/{session_id}/summary", status_code=202, responses=ERRORS)
    async def request_summary(
        self,
        session_id: str,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> JSONResponse:
        """Flush the session and make its summary (needs an LLM backend)."""
        out = await self.worker.summarize.remote(user_id, session_id)
        if out is None:
            raise ApiError(404, "unknown_session", f"session {session_id!r} not found")
        if not out.get("queued"):
            raise ApiError(409, "no_llm", out.get("reason", "summaries need an LLM backend"))
        return JSONResponse(status_code=202, content=out)

    @app.post("/v1/sessions/{session_id}/retry", status_code=202, responses=ERRORS)
    async def retry_failed(
        self,
        session_id: str,
        user_id: str = Query(min_length=1, max_length=128, pattern=ID_PATTERN),
    ) -> JSONResponse:
        """Queue the session's failed LLM extractions again."""
        out = await self.worker.retry_failed.remote(user_id, session_id)
        if out is None:
            raise ApiError(404, "unknown_session", f"session {session_id!r} not found")
        return JSONResponse(status_code=202, content=out)


def build_ingress(group: GroupResources, settings_env: dict, router, worker, embedder):
    return (
        serve.deployment(IngressDeployment)
        .options(name="Ingress", **group.deployment_options())
        .bind(settings_env, router, worker, embedder)
    )
