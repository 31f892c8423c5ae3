"""The `jobs` table and its done-items against a throwaway database."""

import uuid

import pytest

from serve_app.storage import jobs_repo
from serve_app.storage.postgres import create_pool
from tests.unit.storage.job_db import seeded

dsn = seeded  # the seeded database, as the fixture `dsn`


def test_done_items_and_job_lifecycle_are_idempotent(dsn):
    conn = jobs_repo.connect(dsn)
    job = str(uuid.uuid4())
    row = jobs_repo.ensure_job(conn, job, "link", None, {"top_k": 3})
    assert row["status"] == "pending"
    assert jobs_repo.ensure_job(conn, job, "link", None, {})["id"] == job
    with pytest.raises(ValueError):
        jobs_repo.ensure_job(conn, job, "reembed", None, {})
    jobs_repo.mark_done(conn, job, "link", ["x", "y"])
    jobs_repo.mark_done(conn, job, "link", ["y", "z"])
    assert jobs_repo.count_done(conn, job, "link") == 3
    jobs_repo.start_job(conn, job, "sub-1")
    jobs_repo.fail_job(conn, job, "SystemExit: 15", "stopped")
    jobs_repo.start_job(conn, job, None)
    jobs_repo.finish_job(conn, job, {"links": 2})
    row = conn.execute("SELECT * FROM jobs WHERE id=%s", (job,)).fetchone()
    assert (row["status"], row["attempts"], row["submission_id"], row["error"]) == (
        "succeeded", 2, "sub-1", None,
    )  # fmt: skip
    conn.close()


async def test_the_ingress_side_of_a_job_row(dsn):
    pool = await create_pool(dsn, 1, 2)
    try:
        job = await jobs_repo.create_job_async(pool, "link", None, {"top_k": 3})
        await jobs_repo.set_submission_async(pool, job, "sub-0")
        await jobs_repo.set_ended_status_async(pool, job, "stopped")
        row = await jobs_repo.get_job_async(pool, job)
        assert (row["status"], row["submission_id"], row["params"]) == (
            "stopped", "sub-0", {"top_k": 3},
        )  # fmt: skip
        await jobs_repo.reopen_job_async(pool, job)
        await jobs_repo.fail_job_async(pool, job, "x" * 3000)
        row = await jobs_repo.get_job_async(pool, job)
        assert (row["status"], len(row["error"])) == ("failed", 2000)
        await jobs_repo.reopen_job_async(pool, job)
        row = await jobs_repo.get_job_async(pool, job)
        assert (row["status"], row["error"], row["finished_at"]) == ("pending", None, None)

        done = await jobs_repo.create_job_async(pool, "rollback", None, {})
        await jobs_repo.succeed_at_once_async(pool, done, {"active": 1})
        await jobs_repo.set_ended_status_async(pool, done, "failed")  # finished rows keep theirs
        row = await jobs_repo.get_job_async(pool, done)
        assert (row["status"], row["result"], row["done"], row["total"]) == (
            "succeeded", {"active": 1}, 1, 1,
        )  # fmt: skip
        assert row["started_at"] is not None and row["finished_at"] is not None
        assert await jobs_repo.get_job_async(pool, str(uuid.uuid4())) is None
    finally:
        await pool.close()
