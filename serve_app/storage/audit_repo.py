"""The `audit_log` table: rows appended inside the transaction of the change they record."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from serve_app.model.audit import AuditRecord

AUDIT_COLUMNS = "id, at, key_id, tenant, user_id, action, object_ids, request_id"


async def append(conn: asyncpg.Connection, rec: AuditRecord) -> None:
    await conn.execute(
        "INSERT INTO audit_log (key_id, tenant, user_id, action, object_ids, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        rec.key_id,
        rec.tenant,
        rec.user_id,
        rec.action,
        list(rec.object_ids),
        rec.request_id,
    )


async def list_rows(
    pool: asyncpg.Pool,
    tenant: str | None,
    user_id: str | None,
    since: datetime | None,
    after_id: int | None,
    limit: int,
) -> list[dict]:
    """Rows oldest first; `tenant` None: every tenant."""
    rows = await pool.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log"
        " WHERE ($1::text IS NULL OR tenant=$1) AND ($2::text IS NULL OR user_id=$2)"
        " AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::bigint IS NULL OR id > $4)"
        " ORDER BY id LIMIT $5",
        tenant,
        user_id,
        since,
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def prune(pool: asyncpg.Pool, older_than_days: float) -> int:
    status = await pool.execute(
        "DELETE FROM audit_log WHERE at < now() - make_interval(secs => $1)",
        older_than_days * 86400,
    )
    return int(status.split()[-1])
