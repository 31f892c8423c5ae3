"""Users: export everything stored for a user, import it into an empty user, erase a user."""

from collections.abc import AsyncIterator

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse

from memserve.models import ID_PATTERN, Deleted, ImportResult
from serve_app.api import ids, user_export
from serve_app.api.auth import Caller
from serve_app.api.errors import ERRORS, ApiError, not_found
from serve_app.api.services import Svc
from serve_app.storage import export_repo

router = APIRouter(tags=["users"])

UserPath = Path(min_length=1, max_length=128, pattern=ID_PATTERN)
# Entries embedded and indexed per call to the memory index.
_INDEX_CHUNK = 256


@router.get(
    "/v1/users/{user_id}/export",
    responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}},
)
async def export_user(svc: Svc, caller: Caller, user_id: str = UserPath) -> StreamingResponse:
    """JSON Lines: a header, every row stored for the user (messages, sessions and their
    pipeline state, memories of every memory version with their source messages, links,
    revisions, tombstones, the user's jobs and consolidation groups), an end line with counts."""
    repo = await svc.repo()
    stored = caller.user(user_id)
    await ids.require_user(repo, stored, shown=user_id)
    rows = export_repo.export_user(repo.pool, stored)

    async def body() -> AsyncIterator[bytes]:
        async for line in user_export.lines(user_id, rows):
            yield line.encode()

    return StreamingResponse(
        body(),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{user_id}.jsonl"'},
    )


@router.post(
    "/v1/users/{user_id}/import",
    response_model=ImportResult,
    responses={**ERRORS, 409: {"model": ERRORS[404]["model"]}},
)
async def import_user(
    request: Request, svc: Svc, caller: Caller, user_id: str = UserPath
) -> ImportResult:
    """Load an export into `user_id`, which must hold nothing (409 otherwise). All or nothing:
    the rows in one transaction, committed once their vectors are indexed."""
    repo = await svc.repo()
    parsed = user_export.parse(await request.body(), await export_repo.record_fields(repo.pool))
    stored = caller.user(user_id)
    load = export_repo.UserImport(repo.pool, stored, caller.tenant)
    indexed: list[str] = []
    try:
        audit = caller.audit("import", user_id)
        entries = await load.begin(parsed.records, parsed.memory_version, audit)
        for i in range(0, len(entries), _INDEX_CHUNK):
            chunk = [dict(r) for r in entries[i : i + _INDEX_CHUNK]]
            indexed += [r["id"] for r in chunk]
            await svc.memory_index.apply_vector_changes.remote(stored, chunk, [])
        await load.commit()
    except export_repo.ImportConflict as e:
        raise ApiError(409, "user_not_empty", str(e)) from None
    except export_repo.ImportRejected as e:
        raise ApiError(422, "invalid_import", str(e)) from None
    finally:
        await load.rollback()  # nothing left to undo once committed
        if indexed and not load.committed:
            # Vectors of rows that were never committed: never returned, but not kept either.
            await svc.memory_index.apply_vector_changes.remote(stored, [], indexed)
    # Messages not yet turned into memories where they were exported continue here.
    svc.worker.kick.remote()
    return ImportResult(user_id=user_id, imported=parsed.counts())


@router.delete("/v1/users/{user_id}", response_model=Deleted, responses=ERRORS)
async def delete_user(svc: Svc, caller: Caller, user_id: str = UserPath) -> Deleted:
    """Erase the user from PostgreSQL (every table but the audit log, which keeps who changed
    what until its retention ends) and from every vector index generation."""
    audit = caller.audit("erase_user", user_id, (user_id,))
    if not await svc.memory_index.delete_user.remote(caller.user(user_id), audit=audit):
        raise not_found("unknown_user", f"user {user_id!r} not found")
    return Deleted(id=user_id)
