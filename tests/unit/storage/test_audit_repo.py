"""Audit rows: appended in the change's transaction, read by tenant/user/time, pruned."""

from datetime import UTC, datetime, timedelta

import pytest

from serve_app.model.audit import AuditRecord
from serve_app.model.messages import NewMessage
from serve_app.storage import audit_repo, jobs_repo
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database


@pytest.fixture
async def pool():
    dsn = await create_database()
    pool = await create_pool(dsn, 1, 2)
    await migrate(pool)
    yield pool
    await pool.close()
    await drop_database(dsn)


def message(i: int) -> NewMessage:
    return NewMessage(
        message_id=f"m{i}", role="user", name=None, content=f"text {i}",
        ts=datetime(2024, 1, 1, tzinfo=UTC), ts_provided=True, metadata={},
    )  # fmt: skip


async def test_add_messages_appends_the_new_ids_in_its_transaction(pool):
    repo = Repository(pool)
    rec = AuditRecord("k1", "acme", "add", request_id="r1", user_id="alice")
    await repo.add_messages("acme/alice", "s", [message(1), message(2)], None, rec)
    await repo.add_messages("acme/alice", "s", [message(2), message(3)], None, rec)
    rows = await audit_repo.list_rows(pool, "acme", "alice", None, None, 10)
    assert [r["object_ids"] for r in rows] == [["m1", "m2"], ["m3"]]
    assert {(r["key_id"], r["request_id"], r["user_id"]) for r in rows} == {("k1", "r1", "alice")}
    assert await audit_repo.list_rows(pool, "beta", None, None, None, 10) == []
    assert len(await audit_repo.list_rows(pool, None, None, None, None, 10)) == 2
    first = rows[0]["id"]
    assert [r["id"] for r in await audit_repo.list_rows(pool, None, None, None, first, 10)] == [
        rows[1]["id"]
    ]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await audit_repo.list_rows(pool, None, None, future, None, 10) == []


async def test_job_starts_are_audited_and_limited_per_tenant(pool):
    rec = AuditRecord("k1", "acme", "job_start", user_id="alice")
    a = await jobs_repo.create_job_async(pool, "link", "acme/alice", {}, rec, max_active=1)
    assert a is not None
    assert await jobs_repo.create_job_async(pool, "link", "acme/alice", {}, rec, 1) is None
    other = AuditRecord("k2", "beta", "job_start")
    assert await jobs_repo.create_job_async(pool, "link", "beta/x", {}, other, 1) is not None
    await jobs_repo.fail_job_async(pool, a, "boom")
    assert await jobs_repo.create_job_async(pool, "link", "acme/alice", {}, rec, 1) is not None
    rows = await audit_repo.list_rows(pool, "acme", None, None, None, 10)
    assert [r["object_ids"] for r in rows][0] == [a]
    assert len(rows) == 2
    assert (await jobs_repo.get_job_async(pool, a))["tenant"] == "acme"


async def test_prune_deletes_rows_older_than_the_retention(pool):
    async with pool.acquire() as conn:
        await audit_repo.append(conn, AuditRecord("k", "t", "add"))
        await conn.execute("UPDATE audit_log SET at = now() - interval '40 days'")
        await audit_repo.append(conn, AuditRecord("k", "t", "edit"))
    assert await audit_repo.prune(pool, 30) == 1
    assert [r["action"] for r in await audit_repo.list_rows(pool, None, None, None, None, 9)] == [
        "edit"
    ]
