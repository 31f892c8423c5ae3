"""The keys table and the audit rows of key changes, against a throwaway database."""

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from serve_app.model.audit import AuditRecord
from serve_app.security.keys import key_hash, new_key
from serve_app.storage import audit_repo, keys_repo
from serve_app.storage.postgres import create_pool, migrate
from tests.pg import create_database, drop_database

ADMIN = AuditRecord("admin", "default", "key_create", request_id="r1")


@pytest.fixture
async def pool():
    dsn = await create_database()
    pool = await create_pool(dsn, 1, 2)
    await migrate(pool)
    yield pool
    await pool.close()
    await drop_database(dsn)


async def test_create_look_up_list_revoke_touch(pool):
    secret = new_key()
    later = datetime.now(UTC) + timedelta(days=1)
    rec = await keys_repo.create(
        pool, key_hash(secret), "acme", "app", later, 90, ADMIN.in_tenant("acme")
    )
    assert (rec.tenant, rec.name, rec.expires_at, rec.rate_limit_per_min) == (
        "acme", "app", later, 90,
    )  # fmt: skip
    assert await keys_repo.by_hash(pool, key_hash(secret)) == rec
    assert await keys_repo.by_hash(pool, key_hash(new_key())) is None
    assert secret not in str(await pool.fetch("SELECT * FROM api_keys"))
    other = await keys_repo.create(pool, key_hash(new_key()), "beta", "b", None, None, ADMIN)
    assert [k.id for k in await keys_repo.list_keys(pool, "acme")] == [rec.id]
    assert {k.id for k in await keys_repo.list_keys(pool, None)} == {rec.id, other.id}

    revoke = AuditRecord("admin", "default", "key_revoke", request_id="r2")
    first = await keys_repo.revoke(pool, rec.id, revoke)
    assert first is not None and first.revoked_at is not None
    again = await keys_repo.revoke(pool, rec.id, revoke)
    assert again is not None and again.revoked_at == first.revoked_at
    assert await keys_repo.revoke(pool, "00000000-0000-0000-0000-000000000000", revoke) is None

    await keys_repo.touch(pool, other.id)
    touched = await keys_repo.by_hash(
        pool, await pool.fetchval("SELECT key_hash FROM api_keys WHERE tenant='beta'")
    )
    assert touched is not None and touched.last_used_at is not None

    rows = await audit_repo.list_rows(pool, "acme", None, None, None, 10)
    assert [(r["action"], r["object_ids"], r["key_id"]) for r in rows] == [
        ("key_create", [rec.id], "admin"),
        ("key_revoke", [rec.id], "admin"),
        ("key_revoke", [rec.id], "admin"),
    ]


async def test_a_failed_change_leaves_no_audit_row(pool):
    digest = key_hash(new_key())
    await keys_repo.create(pool, digest, "acme", "a", None, None, ADMIN)
    with pytest.raises(asyncpg.UniqueViolationError):
        await keys_repo.create(pool, digest, "acme", "b", None, None, ADMIN)
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 1
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 1
