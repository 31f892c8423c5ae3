"""Memories: add messages, list, get, edit, delete (search: routes/search.py)."""

from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from memserve.models import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    Deleted,
    Memory,
    MemoryList,
    MemoryPatch,
)
from serve_app.api import ids, intake
from serve_app.api.auth import Caller
from serve_app.api.errors import ERRORS, ApiError, not_found
from serve_app.api.pagination import decode_cursor, page
from serve_app.api.routes.params import SessionId, UserId
from serve_app.api.services import Svc

router = APIRouter(tags=["memories"])


def _no_memory(memory_id: str) -> ApiError:
    return not_found("unknown_memory", f"memory {memory_id} not found for this user")


@router.post(
    "/v1/memories",
    status_code=202,
    response_model=AddMemoriesResponse,
    responses={**ERRORS, 200: {"model": AddMemoriesResponse}},
)
async def add_memories(req: AddMemoriesRequest, svc: Svc, caller: Caller) -> JSONResponse:
    messages = intake.new_messages(req, datetime.now(UTC))
    repo = await svc.repo()
    user = caller.user(req.user_id)
    new_ids = await repo.add_messages(
        user, req.session_id, messages, req.metadata, caller.audit("add", req.user_id)
    )
    message_ids = [m.message_id for m in messages]
    if req.flush or req.wait:
        # Waiting for "searchable" implies flushing the session's buffers: messages can
        # otherwise sit in a topic buffer until more of the conversation arrives.
        # An explicit flush ends the session's stretch: also ask for its summary.
        await svc.worker.flush.remote(user, req.session_id, summarize=req.flush)
    else:
        svc.worker.kick.remote()
    body = AddMemoriesResponse(
        session_id=req.session_id, accepted=len(new_ids), message_ids=message_ids
    )
    if not req.wait:
        return JSONResponse(status_code=202, content=body.model_dump(exclude_none=True))
    # 200 once every message of the request is searchable; 202 if the wait timed out.
    body.pending = await intake.wait_processed(
        repo, user, req.session_id, message_ids, svc.settings.wait_timeout_s
    )
    return JSONResponse(status_code=200 if body.pending == 0 else 202, content=body.model_dump())


@router.get("/v1/memories", response_model=MemoryList, responses=ERRORS)
async def list_memories(
    svc: Svc,
    caller: Caller,
    user_id: UserId,
    session_id: SessionId = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> MemoryList:
    repo = await svc.repo()
    after = decode_cursor(cursor) if cursor else None
    user = caller.user(user_id)
    await ids.require_user(repo, user, shown=user_id)
    rows, next_cursor = page(await repo.list_memories(user, session_id, limit + 1, after), limit)
    return MemoryList(memories=[Memory.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
async def get_memory(memory_id: str, user_id: UserId, svc: Svc, caller: Caller) -> Memory:
    repo = await svc.repo()
    row = await repo.get_memory(caller.user(user_id), ids.memory_id(memory_id))
    if row is None:
        raise _no_memory(memory_id)
    return Memory.from_row(row)


@router.patch("/v1/memories/{memory_id}", response_model=Memory, responses=ERRORS)
async def patch_memory(
    memory_id: str, patch: MemoryPatch, user_id: UserId, svc: Svc, caller: Caller
) -> Memory:
    mid = ids.memory_id(memory_id)
    row = await svc.memory_index.update_memory.remote(
        caller.user(user_id),
        mid,
        patch.model_dump(exclude_none=True),
        audit=caller.audit("edit", user_id, (mid,)),
    )
    if row is None:
        raise _no_memory(memory_id)
    return Memory.from_row(row)


@router.delete("/v1/memories/{memory_id}", response_model=Deleted, responses=ERRORS)
async def delete_memory(memory_id: str, user_id: UserId, svc: Svc, caller: Caller) -> Deleted:
    mid = ids.memory_id(memory_id)
    audit = caller.audit("delete", user_id, (mid,))
    if not await svc.memory_index.delete_memory.remote(caller.user(user_id), mid, audit=audit):
        raise _no_memory(memory_id)
    return Deleted(id=mid)
