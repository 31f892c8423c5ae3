"""The `api_keys` table: create, look up by hash, list, revoke, mark used."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from serve_app.model.audit import AuditRecord
from serve_app.security.authenticator import KeyRecord
from serve_app.storage import audit_repo

_COLUMNS = (
    "id::text AS id, tenant, name, created_at, expires_at, revoked_at, rate_limit_per_min,"
    " last_used_at"
)


def _record(r: asyncpg.Record | None) -> KeyRecord | None:
    return KeyRecord(**dict(r)) if r is not None else None


async def create(
    pool: asyncpg.Pool,
    key_hash: str,
    tenant: str,
    name: str,
    expires_at: datetime | None,
    rate_limit_per_min: int | None,
    audit: AuditRecord,
) -> KeyRecord:
    key_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        r = await conn.fetchrow(
            "INSERT INTO api_keys (id, key_hash, tenant, name, expires_at, rate_limit_per_min)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            key_id,
            key_hash,
            tenant,
            name,
            expires_at,
            rate_limit_per_min,
        )
        await audit_repo.append(conn, audit.with_objects([str(key_id)]))
    rec = _record(r)
    assert rec is not None
    return rec


async def by_hash(pool: asyncpg.Pool, key_hash: str) -> KeyRecord | None:
    return _record(
        await pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash=$1", key_hash)
    )


async def list_keys(pool: asyncpg.Pool, tenant: str | None) -> list[KeyRecord]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant=$1"
        " ORDER BY created_at, id",
        tenant,
    )
    return [KeyRecord(**dict(r)) for r in rows]


async def revoke(pool: asyncpg.Pool, key_id: str, audit: AuditRecord) -> KeyRecord | None:
    """Revoke the key (a revoked key keeps its first revocation time); None if unknown. The
    audit row is filed under the key's tenant."""
    async with pool.acquire() as conn, conn.transaction():
        r = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())"
            f" WHERE id=$1 RETURNING {_COLUMNS}",
            uuid.UUID(key_id),
        )
        if r is None:
            return None
        await audit_repo.append(conn, audit.in_tenant(r["tenant"]).with_objects([key_id]))
    return _record(r)


async def touch(pool: asyncpg.Pool, key_id: str) -> None:
    await pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id=$1", uuid.UUID(key_id))
