"""What POST /v1/jobs and GET /v1/jobs/{id} do: validate a job request, create or reopen its
row, hand it to a submit function (Ray's job submission in production, a fake in tests) and
report its status, asking the submitter whether a driver that stopped reporting is alive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from memserve.models import JobRequest, JobStatus
from serve_app.api.errors import ApiError
from serve_app.api.ids import job_id as parse_job_id
from serve_app.api.ids import require_user
from serve_app.maintenance.reextraction import ReextractConfigError, resolve_spec
from serve_app.model.audit import AuditRecord
from serve_app.security.principal import split_user
from serve_app.storage import jobs_repo
from serve_app.storage.postgres import Repository

# (kind, job id, user id, params, attempt) -> submission id; blocking (runs in a thread).
SubmitFn = Callable[[str, str, str | None, dict, int], str]
# submission id -> the submitter's status of it (e.g. Ray's "RUNNING"), None if unknown.
SubmissionStatusFn = Callable[[str], str | None]

# Submission status -> what the `jobs` row should say when the driver ended without saying it.
DEAD = {"STOPPED": "stopped", "FAILED": "failed"}


class JobOrchestrator:
    """Job requests of the API. `rollback` switches index generations back (in the request);
    `extraction_config` is the ingest worker's configuration (a re-extraction's defaults)."""

    def __init__(
        self,
        repo: Callable[[], Awaitable[Repository]],
        submit: SubmitFn,
        submission_status: SubmissionStatusFn,
        rollback: Callable[[], Awaitable[dict]],
        extraction_config: Callable[[], Awaitable[dict]],
    ) -> None:
        self._repo = repo
        self._submit = submit
        self._submission_status = submission_status
        self._rollback = rollback
        self._extraction_config = extraction_config

    async def start(
        self, req: JobRequest, audit: AuditRecord | None = None, max_active: int | None = None
    ) -> tuple[int, dict]:
        """(HTTP status, job body): 200 for a rollback (done in the request), else 202.
        `req.user_id` is the stored (tenant-scoped) id; the job belongs to `audit`'s tenant
        (`default` without one), which may have at most `max_active` pending or running jobs
        (429 beyond)."""
        repo = await self._repo()
        tenant = audit.tenant if audit else None
        if req.user_id is not None:
            await require_user(repo, req.user_id, shown=split_user(req.user_id)[1])
        if req.kind == "rollback":
            return 200, await self._roll_back(repo, audit)
        if req.job_id is not None:
            job_id, user_id, params, attempt = await self._reopen(repo, req, audit)
        else:
            if req.kind == "reextract":
                await self._check_reextract(req.job_params())
            params = req.job_params()
            new_id = await jobs_repo.create_job_async(
                repo.pool, req.kind, req.user_id, params, audit, max_active
            )
            if new_id is None:
                raise ApiError(
                    429,
                    "too_many_jobs",
                    f"at most {max_active} jobs of this tenant may be pending or running",
                    {"Retry-After": "10"},
                )
            job_id, user_id, attempt = new_id, req.user_id, 0
        try:
            sid = await asyncio.to_thread(self._submit, req.kind, job_id, user_id, params, attempt)
        except Exception as e:
            await jobs_repo.fail_job_async(repo.pool, job_id, f"submission failed: {e}")
            raise
        await jobs_repo.set_submission_async(repo.pool, job_id, sid)
        return 202, await self.status(job_id, tenant)

    async def _roll_back(self, repo: Repository, audit: AuditRecord | None) -> dict:
        job_id = await jobs_repo.create_job_async(repo.pool, "rollback", None, {}, audit)
        assert job_id is not None  # no limit asked
        try:
            result = await self._rollback()
        except ValueError as e:
            await jobs_repo.fail_job_async(repo.pool, job_id, str(e))
            raise ApiError(409, "nothing_to_roll_back", str(e)) from None
        await jobs_repo.succeed_at_once_async(repo.pool, job_id, result)
        return await self.status(job_id, audit.tenant if audit else None)

    async def _reopen(
        self, repo: Repository, req: JobRequest, audit: AuditRecord | None
    ) -> tuple[str, str | None, dict, int]:
        """A failed or stopped job (of `audit`'s tenant), pending again for its next attempt."""
        row = await jobs_repo.get_job_async(repo.pool, parse_job_id(req.job_id or ""))
        if row is None or (audit is not None and row["tenant"] != audit.tenant):
            raise ApiError(404, "unknown_job", f"job {req.job_id} not found")
        if row["kind"] != req.kind:
            raise ApiError(422, "wrong_kind", f"job {req.job_id} is a {row['kind']} job")
        if row["status"] == "succeeded":
            raise ApiError(409, "job_finished", f"job {req.job_id} already succeeded")
        if row["status"] == "running":
            raise ApiError(409, "job_running", f"job {req.job_id} is running")
        await jobs_repo.reopen_job_async(repo.pool, row["id"], audit)
        return row["id"], row["user_id"], row["params"], row["attempts"] + 1

    async def _check_reextract(self, params: dict) -> None:
        """Refuse up front what this service cannot do (e.g. a compression rate without the
        Compressor, another model without an OpenAI-compatible endpoint): 422, not a job that
        fails later."""
        cfg = await self._extraction_config()
        try:
            resolve_spec(params, cfg)
        except ReextractConfigError as e:
            raise ApiError(422, "invalid_job", str(e)) from None

    async def status(self, job_id: str, tenant: str | None = None) -> dict:
        """The job's row as JSON; a pending or running job whose driver ended is marked.
        With `tenant`, a job of another tenant is unknown and user ids are that tenant's."""
        repo = await self._repo()
        row = await jobs_repo.get_job_async(repo.pool, job_id)
        if row is None or (tenant is not None and row["tenant"] != tenant):
            raise ApiError(404, "unknown_job", f"job {job_id} not found")
        if row["status"] in ("pending", "running") and row["submission_id"]:
            # A driver that was stopped or crashed cannot say so itself: ask the submitter.
            submitted = await asyncio.to_thread(self._submission_status, row["submission_id"])
            if submitted in DEAD:
                row["status"] = DEAD[submitted]
                await jobs_repo.set_ended_status_async(repo.pool, job_id, row["status"])
        if tenant is not None and row["user_id"] is not None:
            row["user_id"] = split_user(row["user_id"])[1]
        return JobStatus(**row).model_dump(mode="json")
