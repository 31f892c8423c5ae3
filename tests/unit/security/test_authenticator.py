"""Key checks: admin key, unknown/revoked/expired keys, the TTL cache and lazy last-use writes."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.security.authenticator import Authenticator, AuthError, KeyRecord
from serve_app.security.keys import key_hash, new_key

NOW = datetime.now(UTC)


class Table:
    """A keys table by hash, counting lookups and touches."""

    def __init__(self) -> None:
        self.rows: dict[str, KeyRecord] = {}
        self.lookups = 0
        self.touched: list[str] = []

    def add(self, tenant: str = "acme", **kw) -> str:
        key = new_key()
        self.rows[key_hash(key)] = KeyRecord(f"id-{len(self.rows)}", tenant, "n", NOW, **kw)
        return key

    async def lookup(self, digest: str) -> KeyRecord | None:
        self.lookups += 1
        return self.rows.get(digest)

    async def touch(self, key_id: str) -> None:
        self.touched.append(key_id)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(table: Table, clock: Clock | None = None, admin: str = "ms_admin-key-000000000000"):
    return Authenticator(admin, table.lookup, table.touch, ttl_s=1.0, clock=clock or Clock())


async def test_admin_key_is_the_default_tenants_admin_without_a_lookup():
    table = Table()
    p = await make(table).check("ms_admin-key-000000000000")
    assert (p.key_id, p.tenant, p.is_admin) == ("admin", "default", True)
    assert table.lookups == 0


@pytest.mark.parametrize("token", ["", "abc", "Bearer x", "ms_short", "ms_" + "é" * 30])
async def test_malformed_tokens_are_refused_without_a_lookup(token):
    table = Table()
    with pytest.raises(AuthError) as e:
        await make(table).check(token)
    assert e.value.code == "invalid_key"
    assert table.lookups == 0


async def test_tenant_unknown_revoked_and_expired_keys():
    table = Table()
    ok = table.add(rate_limit_per_min=7)
    revoked = table.add(revoked_at=NOW - timedelta(seconds=1))
    expired = table.add(expires_at=NOW - timedelta(seconds=1))
    later = table.add(expires_at=NOW + timedelta(days=1))
    auth = make(table)
    p = await auth.check(ok)
    assert (p.tenant, p.is_admin, p.rate_limit_per_min) == ("acme", False, 7)
    assert (await auth.check(later)).tenant == "acme"
    for key, code in (
        (new_key(), "invalid_key"),
        (revoked, "revoked_key"),
        (expired, "expired_key"),
    ):
        with pytest.raises(AuthError) as e:
            await auth.check(key)
        assert e.value.code == code


async def test_answers_are_cached_for_the_ttl_then_read_again():
    table, clock = Table(), Clock()
    key = table.add()
    auth = make(table, clock)
    for _ in range(5):
        await auth.check(key)
    assert table.lookups == 1
    # Revoked elsewhere: still accepted until the TTL ends, refused after.
    digest = key_hash(key)
    table.rows[digest] = KeyRecord("id-0", "acme", "n", NOW, revoked_at=NOW)
    clock.t += 0.9
    await auth.check(key)
    clock.t += 0.2
    with pytest.raises(AuthError):
        await auth.check(key)
    assert table.lookups == 2


async def test_forget_drops_a_revoked_key_at_once():
    table = Table()
    key = table.add()
    auth = make(table)
    await auth.check(key)
    table.rows[key_hash(key)] = KeyRecord("id-0", "acme", "n", NOW, revoked_at=NOW)
    auth.forget("id-0")
    with pytest.raises(AuthError):
        await auth.check(key)


async def test_last_use_is_written_at_most_once_a_minute():
    table, clock = Table(), Clock()
    key = table.add()
    auth = make(table, clock)
    for step in (0, 10, 30, 61):
        clock.t = 100.0 + step
        await auth.check(key)
    await asyncio.sleep(0)
    assert table.touched == ["id-0", "id-0"]
