"""Sessions: pipeline status, flush, summary, and the retry of failed LLM extractions."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from memserve.models import SessionStatus
from serve_app.api.auth import Caller
from serve_app.api.errors import ERRORS, ApiError, not_found
from serve_app.api.routes.params import SessionPath, UserId
from serve_app.api.services import Svc
from serve_app.storage.llm_tasks_repo import LLMTasksRepo

router = APIRouter(tags=["sessions"])


def _no_session(session_id: str) -> ApiError:
    return not_found("unknown_session", f"session {session_id!r} not found")


def _accepted(session_id: str, out: dict | None) -> JSONResponse:
    if out is None:
        raise _no_session(session_id)
    return JSONResponse(status_code=202, content=out)


@router.get("/v1/sessions/{session_id}", response_model=SessionStatus, responses=ERRORS)
async def get_session(
    session_id: SessionPath, user_id: UserId, svc: Svc, caller: Caller
) -> SessionStatus:
    repo = await svc.repo()
    user = caller.user(user_id)
    st = await repo.session_status(user, session_id)
    if st is None:
        raise _no_session(session_id)
    llm = await LLMTasksRepo.session_status(repo.pool, user, session_id)
    return SessionStatus.from_status(user_id, session_id, st, llm)


@router.post("/v1/sessions/{session_id}/flush", status_code=202, responses=ERRORS)
async def flush_session(
    session_id: SessionPath, user_id: UserId, svc: Svc, caller: Caller
) -> JSONResponse:
    """Turn everything the session's buffers hold into memories now, without waiting for the
    buffers to fill or the session to go idle. Durable: honoured after a restart too."""
    upto = await svc.worker.flush.remote(caller.user(user_id), session_id)
    return _accepted(session_id, None if upto is None else {"flush_upto_seq": upto})


@router.post("/v1/sessions/{session_id}/summary", status_code=202, responses=ERRORS)
async def request_summary(
    session_id: SessionPath, user_id: UserId, svc: Svc, caller: Caller
) -> JSONResponse:
    """Flush the session and make its summary (needs an LLM backend)."""
    out = await svc.worker.summarize.remote(caller.user(user_id), session_id)
    if out is not None and not out.get("queued"):
        raise ApiError(409, "no_llm", out.get("reason", "summaries need an LLM backend"))
    return _accepted(session_id, out)


@router.post("/v1/sessions/{session_id}/retry", status_code=202, responses=ERRORS)
async def retry_failed(
    session_id: SessionPath, user_id: UserId, svc: Svc, caller: Caller
) -> JSONResponse:
    """Queue the session's failed LLM extractions again."""
    out = await svc.worker.retry_failed.remote(caller.user(user_id), session_id)
    return _accepted(session_id, out)
