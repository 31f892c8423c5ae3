"""The `jobs` table and its done-items against a throwaway database."""

import uuid

import pytest

from serve_app.storage import jobs_repo
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
