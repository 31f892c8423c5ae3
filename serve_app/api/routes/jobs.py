"""Offline jobs and index generations.

Jobs over the whole index (reembed, reextract, rollback, and any job over every user) need the
admin key. A tenant key runs consolidate and link for one of its own users, with at most
`tenant_max_jobs` of its jobs pending or running at once, and sees only its own jobs (another
tenant's job id is unknown: 404). Generations describe the whole index: admin only."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from memserve.models import JobRequest, JobStatus
from serve_app.api import ids
from serve_app.api.auth import Admin, Caller
from serve_app.api.errors import ERRORS, ApiError
from serve_app.api.services import Services, Svc
from serve_app.maintenance.orchestration import JobOrchestrator

router = APIRouter(tags=["jobs"])

# Kinds a tenant key may start (for one of its users).
TENANT_KINDS = frozenset({"consolidate", "link"})


def _jobs(svc: Services) -> JobOrchestrator:
    if svc.jobs is None:
        raise ApiError(503, "unavailable", "jobs are not available in this process")
    return svc.jobs


@router.post("/v1/jobs", status_code=202, response_model=JobStatus, responses=ERRORS)
async def start_job(req: JobRequest, svc: Svc, caller: Caller) -> JSONResponse:
    if not caller.is_admin:
        if req.kind not in TENANT_KINDS:
            raise ApiError(403, "admin_only", f"a {req.kind} job needs the admin key")
        if req.user_id is None and req.job_id is None:
            raise ApiError(403, "admin_only", "a job over every user needs the admin key")
    scoped = req.model_copy(
        update={"user_id": caller.user(req.user_id) if req.user_id is not None else None}
    )
    audit = caller.audit("job_start" if req.job_id is None else "job_resume", req.user_id)
    limit = None if caller.is_admin else svc.settings.tenant_max_jobs
    status, body = await _jobs(svc).start(scoped, audit, limit)
    return JSONResponse(status_code=status, content=body)


@router.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=ERRORS)
async def get_job(job_id: str, svc: Svc, caller: Caller) -> JSONResponse:
    jid = ids.job_id(job_id)
    tenant = None if caller.is_admin else caller.tenant
    return JSONResponse(content=await _jobs(svc).status(jid, tenant))


@router.get("/v1/generations", responses=ERRORS)
async def generations(svc: Svc, _: Admin) -> JSONResponse:
    """Index generations: model, status and the memory version each one indexes (with how
    that version was built); the active one is what searches and memory reads serve."""
    return JSONResponse(content=await svc.memory_index.generation_status.remote())
