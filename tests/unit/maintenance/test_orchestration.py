"""JobOrchestrator against a throwaway database, with a fake submitter in place of Ray."""

import pytest

from memserve.models import JobRequest
from serve_app.api.errors import ApiError
from serve_app.maintenance.orchestration import JobOrchestrator
from serve_app.storage import jobs_repo
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database


@pytest.fixture
async def repo():
    dsn = await create_database()
    pool = await create_pool(dsn, 1, 2)
    await migrate(pool)
    await pool.execute("INSERT INTO users (user_id) VALUES ('u')")
    yield Repository(pool)
    await pool.close()
    await drop_database(dsn)


class FakeSubmitter:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.status: str | None = "RUNNING"
        self.fail = False

    def submit(self, kind, job_id, user_id, params, attempt) -> str:
        if self.fail:
            raise ConnectionError("no dashboard")
        self.calls.append((kind, job_id, user_id, params, attempt))
        return f"sub-{kind}-{attempt}"

    def submission_status(self, submission_id: str) -> str | None:
        return self.status


def orchestrator(repo, sub, rollback=None, config=None) -> JobOrchestrator:
    async def get_repo():
        return repo

    async def no_rollback():
        raise ValueError("no previous generation to roll back to")

    async def extraction_config():
        return config or {}

    return JobOrchestrator(
        get_repo, sub.submit, sub.submission_status, rollback or no_rollback, extraction_config
    )


async def test_start_submits_a_new_job_and_status_reads_it_back(repo):
    sub = FakeSubmitter()
    jobs = orchestrator(repo, sub)
    status, body = await jobs.start(JobRequest(kind="consolidate", user_id="u", min_score=0.7))
    assert status == 202
    assert (body["kind"], body["status"], body["user_id"]) == ("consolidate", "pending", "u")
    assert sub.calls == [("consolidate", body["id"], "u", {"min_score": 0.7}, 0)]
    row = await jobs_repo.get_job_async(repo.pool, body["id"])
    assert row["submission_id"] == "sub-consolidate-0"
    sub.status = "STOPPED"  # the driver ended without saying so
    assert (await jobs.status(body["id"]))["status"] == "stopped"
    assert (await jobs_repo.get_job_async(repo.pool, body["id"]))["status"] == "stopped"


async def test_resume_checks_the_row_and_submits_the_next_attempt(repo):
    sub = FakeSubmitter()
    jobs = orchestrator(repo, sub)
    _, body = await jobs.start(JobRequest(kind="link"))
    job_id = body["id"]
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="reembed", job_id=job_id))
    assert (e.value.status, e.value.code) == (422, "wrong_kind")
    await repo.pool.execute("UPDATE jobs SET status='running' WHERE id=$1::uuid", job_id)
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="link", job_id=job_id))
    assert (e.value.status, e.value.code) == (409, "job_running")
    await jobs_repo.fail_job_async(repo.pool, job_id, "boom")
    status, body = await jobs.start(JobRequest(kind="link", job_id=job_id))
    assert (status, body["status"], body["error"]) == (202, "pending", None)
    assert sub.calls[-1] == ("link", job_id, None, {}, 1)
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="link", job_id="not-a-uuid"))
    assert (e.value.status, e.value.code) == (422, "invalid_job_id")


async def test_unknown_user_and_failed_submission(repo):
    sub = FakeSubmitter()
    jobs = orchestrator(repo, sub)
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="link", user_id="nobody"))
    assert (e.value.status, e.value.code) == (404, "unknown_user")
    sub.fail = True
    with pytest.raises(ConnectionError):
        await jobs.start(JobRequest(kind="link"))
    row = await repo.pool.fetchrow("SELECT status, error FROM jobs")
    assert (row["status"], row["error"]) == ("failed", "submission failed: no dashboard")


async def test_rollback_is_done_in_the_request(repo):
    sub = FakeSubmitter()
    jobs = orchestrator(repo, sub)
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="rollback"))
    assert (e.value.status, e.value.code) == (409, "nothing_to_roll_back")

    async def rollback():
        return {"active": 1, "previous": 2}

    status, body = await orchestrator(repo, sub, rollback).start(JobRequest(kind="rollback"))
    assert status == 200
    assert (body["status"], body["result"], body["done"]) == (
        "succeeded",
        {"active": 1, "previous": 2},
        1,
    )
    assert sub.calls == []
    statuses = [r["status"] for r in await repo.pool.fetch("SELECT status FROM jobs ORDER BY 1")]
    assert statuses == ["failed", "succeeded"]


async def test_reextract_the_service_cannot_do_is_refused_before_a_row_exists(repo):
    sub = FakeSubmitter()
    cfg = {"llm_settings": None, "compression": {"enabled": False}}
    jobs = orchestrator(repo, sub, config=cfg)
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="reextract", compress_rate=0.5))
    assert (e.value.status, e.value.code) == (422, "invalid_job")
    assert await repo.pool.fetchval("SELECT count(*) FROM jobs") == 0
    with pytest.raises(ApiError) as e:
        await jobs.status("00000000-0000-0000-0000-000000000000")
    assert (e.value.status, e.value.code) == (404, "unknown_job")


async def test_tenant_jobs_are_limited_hidden_from_other_tenants_and_audited(repo):
    from serve_app.model.audit import AuditRecord

    await repo.pool.execute("INSERT INTO users (user_id) VALUES ('acme/alice')")
    sub = FakeSubmitter()
    jobs = orchestrator(repo, sub)
    acme = AuditRecord("k1", "acme", "job_start", request_id="r", user_id="alice")
    # The route scopes the caller's user id (which cannot hold '/') after validation.
    req = JobRequest(kind="link", user_id="alice").model_copy(update={"user_id": "acme/alice"})
    status, body = await jobs.start(req, acme, max_active=1)
    assert (status, body["user_id"]) == (202, "alice")
    assert sub.calls[-1][2] == "acme/alice"  # the job works on the stored id
    with pytest.raises(ApiError) as e:
        await jobs.start(req, acme, max_active=1)
    assert (e.value.status, e.value.code) == (429, "too_many_jobs")
    assert e.value.headers == {"Retry-After": "10"}
    assert (await jobs.status(body["id"], "acme"))["user_id"] == "alice"
    assert (await jobs.status(body["id"]))["user_id"] == "acme/alice"  # the admin's view
    with pytest.raises(ApiError) as e:
        await jobs.status(body["id"], "beta")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        await jobs.start(JobRequest(kind="link", job_id=body["id"]), acme.in_tenant("beta"))
    assert (e.value.status, e.value.code) == (404, "unknown_job")
    with pytest.raises(ApiError) as e:
        nobody = JobRequest(kind="link").model_copy(update={"user_id": "acme/nobody"})
        await jobs.start(nobody, acme)
    assert e.value.message == "user 'nobody' has no memories"
    rows = await repo.pool.fetch("SELECT action, object_ids, request_id FROM audit_log")
    assert [tuple(r) for r in rows] == [("job_start", [body["id"]], "r")]
