"""Read routes behind the memory viewer (/ui): users, sessions with their pipeline status,
messages in conversation order, a memory's sources, links and history, the live feed, the
charts' counts, the job list; and activating an index generation (admin). Every read is the
caller's tenant's: user ids are scoped by `Caller.user`, lists by the tenant's id prefix."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from memserve.models import (
    Feed,
    FeedMemory,
    JobList,
    JobStatus,
    Memory,
    MemoryDetails,
    MemoryGrowth,
    MemoryLinkView,
    MessageList,
    Revision,
    SessionList,
    SessionSummary,
    StoredMessageView,
    Tombstone,
    TombstoneList,
    UserList,
    UserSummary,
)
from serve_app.api import ids
from serve_app.api.auth import Admin, Caller, Identity
from serve_app.api.errors import ERRORS, ApiError, not_found
from serve_app.api.pagination import decode_cursor, encode_cursor
from serve_app.api.routes.params import OptionalUserId, SessionPath, UserId, UserPath
from serve_app.api.services import Svc
from serve_app.security.principal import split_user
from serve_app.storage import viewer_repo
from serve_app.storage.generations_repo import GenerationIncomplete
from serve_app.storage.links_repo import linked_memories
from serve_app.storage.memory_versions_repo import VersionBehind

router = APIRouter(tags=["viewer"], responses=ERRORS)

# A memory's links shown at once: a link job keeps a few per memory (top_k).
LINKS_SHOWN = 50


def _prefix(caller: Identity) -> str:
    """What the stored ids of the caller's tenant's users start with."""
    return caller.user("")


@router.get("/v1/users", response_model=UserList)
async def list_users(
    svc: Svc,
    caller: Caller,
    limit: int = Query(100, ge=1, le=500),
    after: OptionalUserId = None,
) -> UserList:
    """The tenant's users in id order, with how many sessions, messages and memories each
    has."""
    repo = await svc.repo()
    prefix = _prefix(caller)
    stored_after = caller.user(after) if after is not None else None
    rows = await viewer_repo.list_users(repo.pool, prefix, limit + 1, stored_after)
    more = len(rows) > limit
    users = [UserSummary(**{**r, "user_id": r["user_id"][len(prefix) :]}) for r in rows[:limit]]
    return UserList(users=users, next_after=users[-1].user_id if more else None)


@router.get("/v1/users/{user_id}/sessions", response_model=SessionList)
async def list_sessions(user_id: UserPath, svc: Svc, caller: Caller) -> SessionList:
    """The user's sessions, latest activity first, each with its pipeline status (messages
    received, processed, pending, buffered, failed), memories and token counts."""
    repo = await svc.repo()
    user = caller.user(user_id)
    await ids.require_user(repo, user, user_id)
    rows = await viewer_repo.list_sessions(repo.pool, user)
    return SessionList(sessions=[SessionSummary.from_row(r) for r in rows])


@router.get("/v1/sessions/{session_id}/messages", response_model=MessageList)
async def list_messages(
    session_id: SessionPath,
    user_id: UserId,
    svc: Svc,
    caller: Caller,
    # Message seq is a PostgreSQL integer: a larger value is a 422, not a database error.
    after_seq: int = Query(-1, ge=-1, le=2**31 - 1),
    limit: int = Query(200, ge=1, le=1000),
) -> MessageList:
    """The session's messages in conversation order, each with its pipeline status."""
    repo = await svc.repo()
    user = caller.user(user_id)
    if not await viewer_repo.session_exists(repo.pool, user, session_id):
        raise not_found("unknown_session", f"session {session_id!r} not found")
    rows = await viewer_repo.list_messages(repo.pool, user, session_id, after_seq, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return MessageList(
        messages=[StoredMessageView.from_row(r) for r in rows],
        next_after_seq=rows[-1]["seq"] if more else None,
    )


@router.get("/v1/memories/{memory_id}/details", response_model=MemoryDetails)
async def memory_details(
    memory_id: str, user_id: UserId, svc: Svc, caller: Caller
) -> MemoryDetails:
    """A memory (or its tombstone, when it was removed), the messages it was built from, its
    links, its revisions and the tombstones of the memories it superseded."""
    mid = ids.memory_id(memory_id)
    user_id = caller.user(user_id)
    repo = await svc.repo()
    pool = repo.pool
    row = await repo.get_memory(user_id, mid)
    tombstones = [Tombstone(**t) for t in await viewer_repo.tombstones_of(pool, user_id, mid)]
    removed = next((t for t in tombstones if t.id == mid), None)
    if row is None and removed is None:
        raise not_found("unknown_memory", f"memory {memory_id} not found for this user")
    origin = row if row is not None else removed.entry
    sources = await viewer_repo.source_messages(
        pool, user_id, origin["session_id"], origin["source_message_ids"]
    )
    links = (await linked_memories(pool, user_id, [mid], LINKS_SHOWN)).get(mid, [])
    linked = await repo.memories_by_ids(user_id, [lk["id"] for lk in links]) if links else {}
    return MemoryDetails(
        memory=Memory.from_row(row) if row is not None else None,
        removed=removed,
        sources=[StoredMessageView.from_row(s) for s in sources],
        links=[
            MemoryLinkView(
                memory=Memory.from_row(linked[lk["id"]]),
                reason=lk["reason"],
                link_score=lk["link_score"],
            )
            for lk in links
            if lk["id"] in linked
        ],
        revisions=[Revision(**r) for r in await viewer_repo.revisions(pool, user_id, mid)],
        tombstones=tombstones,
    )


@router.get("/v1/users/{user_id}/tombstones", response_model=TombstoneList)
async def list_tombstones(
    user_id: UserPath, svc: Svc, caller: Caller, limit: int = Query(100, ge=1, le=1000)
) -> TombstoneList:
    """The user's removed memories (consolidation), newest first, with why and by what."""
    repo = await svc.repo()
    user = caller.user(user_id)
    await ids.require_user(repo, user, user_id)
    rows = await viewer_repo.list_tombstones(repo.pool, user, limit)
    return TombstoneList(tombstones=[Tombstone(**r) for r in rows])


@router.get("/v1/feed", response_model=Feed)
async def feed(
    svc: Svc,
    caller: Caller,
    user_id: OptionalUserId = None,
    cursor: str | None = Query(None, max_length=512),
    limit: int = Query(100, ge=1, le=500),
) -> Feed:
    """Memories in the order they were written, of one user or (no `user_id`) of every user of
    the tenant. Without `cursor`: the latest `limit`; with the `cursor` of the previous answer:
    only those written since (poll it)."""
    repo = await svc.repo()
    after = decode_cursor(cursor) if cursor else None
    prefix = _prefix(caller)
    user = caller.user(user_id) if user_id is not None else None
    rows = await viewer_repo.memories_created_after(repo.pool, user, prefix, after, limit)
    position = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if rows else cursor
    return Feed(
        memories=[
            FeedMemory(**Memory.from_row(r).model_dump(), user_id=r["user_id"][len(prefix) :])
            for r in rows
        ],
        cursor=position,
    )


@router.get("/v1/users/{user_id}/memories-over-time", response_model=MemoryGrowth)
async def memories_over_time(
    user_id: UserPath, svc: Svc, caller: Caller, bucket: Literal["minute", "hour", "day"] = "day"
) -> MemoryGrowth:
    """How many memories were written per minute, hour or day."""
    repo = await svc.repo()
    user = caller.user(user_id)
    await ids.require_user(repo, user, user_id)
    rows = await viewer_repo.memories_per_bucket(repo.pool, user, bucket)
    return MemoryGrowth(bucket=bucket, points=rows)


@router.get("/v1/jobs", response_model=JobList)
async def list_jobs(svc: Svc, caller: Caller, limit: int = Query(20, ge=1, le=200)) -> JobList:
    """The latest jobs, newest first, with their progress: every job for the admin key, the
    jobs of the tenant's users for a tenant's key."""
    repo = await svc.repo()
    rows = await viewer_repo.list_jobs(
        repo.pool, None if caller.is_admin else _prefix(caller), limit
    )
    if not caller.is_admin:  # a tenant sees its users as it names them
        rows = [{**r, "user_id": r["user_id"] and split_user(r["user_id"])[1]} for r in rows]
    return JobList(jobs=[JobStatus(**r) for r in rows])


@router.post("/v1/generations/{generation}/activate")
async def activate_generation(generation: int, svc: Svc, _: Admin) -> dict:
    """Make a complete index generation (a finished rebuild, or the previous one) the one
    searched; the one it replaces is kept for rollback."""
    live = (await svc.memory_index.generation_status.remote())["generations"]
    if not any(g["generation"] == generation for g in live):
        raise not_found("unknown_generation", f"no live index generation {generation}")
    try:
        return await svc.memory_index.activate_generation.remote(generation)
    except (GenerationIncomplete, VersionBehind, ValueError) as e:
        # Incomplete, behind, or in a state that cannot be activated (e.g. already active).
        raise ApiError(409, "cannot_activate", str(e)) from None
