"""The audit log: a tenant key reads its tenant's rows, the admin key every tenant's."""

from datetime import UTC, datetime

from fastapi import APIRouter, Query

from memserve.models import AuditEntry, AuditList, Tenant
from serve_app.api.auth import Caller
from serve_app.api.errors import ERRORS, ApiError
from serve_app.api.routes.params import OptionalUserId
from serve_app.api.services import Svc
from serve_app.storage import audit_repo

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditList, responses=ERRORS)
async def audit_log(
    svc: Svc,
    caller: Caller,
    user_id: OptionalUserId = None,
    since: datetime | None = None,
    after: int | None = Query(None, ge=0, le=2**63 - 1, description="next_after of a page"),
    limit: int = Query(100, ge=1, le=1000),
    tenant: Tenant | None = Query(None, description="admin key: only this tenant"),
) -> AuditList:
    """Changes oldest first: adds, edits, deletes, erasures, job starts, key changes."""
    if not caller.is_admin:
        if tenant is not None and tenant != caller.tenant:
            raise ApiError(403, "admin_only", "only the admin key reads other tenants' rows")
        tenant = caller.tenant
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await audit_repo.list_rows(
        (await svc.repo()).pool, tenant, user_id, since, after, limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditList(
        entries=[AuditEntry(**r) for r in rows], next_after=rows[-1]["id"] if more else None
    )
