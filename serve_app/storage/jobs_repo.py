"""The `jobs` table and its per-stage done-items (`job_items`). Job drivers and their Ray Data
workers are synchronous code and use psycopg; the Ingress uses its asyncpg pool."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from serve_app.model.audit import AuditRecord
from serve_app.security.principal import DEFAULT_TENANT
from serve_app.storage import audit_repo

JOB_COLUMNS = (
    "id::text AS id, kind, tenant, user_id, params, state, status, stage, total, done, rate_per_s,"
    " eta_s, result, error, submission_id, attempts, created_at, started_at, updated_at,"
    " finished_at"
)


def connect(dsn: str) -> psycopg.Connection:
    """A synchronous connection for job code (rows as dicts, autocommit outside transactions)."""
    return psycopg.connect(dsn, row_factory=dict_row, autocommit=True)


# --- async, for the Ingress ---------------------------------------------------------------------


async def create_job_async(
    pool: asyncpg.Pool,
    kind: str,
    user_id: str | None,
    params: dict,
    audit: AuditRecord | None = None,
    max_active: int | None = None,
) -> str | None:
    """A new pending job of the audit record's tenant (`default` without one), its audit row
    in the same transaction; None when the tenant already has `max_active` pending or
    running jobs."""
    tenant = audit.tenant if audit else DEFAULT_TENANT
    job_id = str(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        if max_active is not None:
            # Serialises the tenant's job starts, so two requests cannot both take the last slot.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", tenant)
            active = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE tenant=$1 AND status IN ('pending', 'running')",
                tenant,
            )
            if active >= max_active:
                return None
        await conn.execute(
            "INSERT INTO jobs (id, kind, user_id, params, tenant) VALUES ($1, $2, $3, $4, $5)",
            uuid.UUID(job_id),
            kind,
            user_id,
            params,
            tenant,
        )
        if audit is not None:
            await audit_repo.append(conn, audit.with_objects([job_id]))
    return job_id


async def set_submission_async(pool: asyncpg.Pool, job_id: str, submission_id: str) -> None:
    await pool.execute(
        "UPDATE jobs SET submission_id=$2, updated_at=now() WHERE id=$1",
        uuid.UUID(job_id),
        submission_id,
    )


async def fail_job_async(pool: asyncpg.Pool, job_id: str, error: str) -> None:
    await pool.execute(
        "UPDATE jobs SET status='failed', error=$2, updated_at=now(), finished_at=now()"
        " WHERE id=$1",
        uuid.UUID(job_id),
        error[:2000],
    )


async def succeed_at_once_async(pool: asyncpg.Pool, job_id: str, result: dict) -> None:
    """A job done inside the request (one step, e.g. a rollback): started and finished now."""
    await pool.execute(
        "UPDATE jobs SET status='succeeded', result=$2, done=1, total=1,"
        " started_at=now(), finished_at=now(), updated_at=now() WHERE id=$1::uuid",
        job_id,
        result,
    )


async def reopen_job_async(
    pool: asyncpg.Pool, job_id: str, audit: AuditRecord | None = None
) -> None:
    """A failed or stopped job back to pending before it is submitted again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE jobs SET status='pending', error=NULL, finished_at=NULL,"
            " updated_at=now() WHERE id=$1::uuid",
            job_id,
        )
        if audit is not None:
            await audit_repo.append(conn, audit.with_objects([job_id]))


async def set_ended_status_async(pool: asyncpg.Pool, job_id: str, status: str) -> None:
    """The status of a driver that ended without saying so; a row it finished itself wins."""
    await pool.execute(
        "UPDATE jobs SET status=$2, updated_at=now() WHERE id=$1::uuid"
        " AND status IN ('pending', 'running')",
        job_id,
        status,
    )


async def get_job_async(pool: asyncpg.Pool, job_id: str) -> dict | None:
    r = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=$1", uuid.UUID(job_id))
    return dict(r) if r else None


# --- sync, for drivers --------------------------------------------------------------------------


def ensure_job(
    conn: psycopg.Connection, job_id: str, kind: str, user_id: str | None, params: dict
) -> dict:
    """The job's row, created if this run was started by hand (`ray job submit`)."""
    conn.execute(
        "INSERT INTO jobs (id, kind, user_id, params) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (job_id, kind, user_id, Jsonb(params)),
    )
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
    if row["kind"] != kind:
        raise ValueError(f"job {job_id} is a {row['kind']!r} job, not {kind!r}")
    return row


def start_job(conn: psycopg.Connection, job_id: str, submission_id: str | None) -> None:
    conn.execute(
        "UPDATE jobs SET status='running', attempts=attempts+1, error=NULL, finished_at=NULL,"
        " started_at=COALESCE(started_at, now()), updated_at=now(),"
        " submission_id=COALESCE(%s, submission_id) WHERE id=%s",
        (submission_id, job_id),
    )


def merge_state(conn: psycopg.Connection, job_id: str, state: dict) -> None:
    conn.execute(
        "UPDATE jobs SET state = state || %s, updated_at=now() WHERE id=%s",
        (Jsonb(state), job_id),
    )


def report_progress(
    conn: psycopg.Connection,
    job_id: str,
    stage: str,
    total: int,
    done: int,
    rate: float | None,
    eta: float | None,
) -> None:
    conn.execute(
        "UPDATE jobs SET stage=%s, total=%s, done=%s, rate_per_s=%s, eta_s=%s, updated_at=now()"
        " WHERE id=%s",
        (stage, total, done, rate, eta, job_id),
    )


def finish_job(conn: psycopg.Connection, job_id: str, result: dict) -> None:
    conn.execute(
        "UPDATE jobs SET status='succeeded', result=%s, eta_s=0, updated_at=now(),"
        " finished_at=now() WHERE id=%s",
        (Jsonb(result), job_id),
    )


def fail_job(conn: psycopg.Connection, job_id: str, error: str, status: str = "failed") -> None:
    conn.execute(
        "UPDATE jobs SET status=%s, error=%s, updated_at=now(), finished_at=now() WHERE id=%s",
        (status, error[:2000], job_id),
    )


def count_done(conn: psycopg.Connection, job_id: str, stage: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM job_items WHERE job_id=%s AND stage=%s", (job_id, stage)
    ).fetchone()["n"]


def mark_done(conn: psycopg.Connection, job_id: str, stage: str, items: Iterable[str]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO job_items (job_id, stage, item_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            [(job_id, stage, i) for i in items],
        )
