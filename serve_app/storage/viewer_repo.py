"""Read-only queries behind the memory viewer's routes: users, sessions with their pipeline
counts, messages in conversation order, a memory's sources and history, the live feed and the
counts the charts draw. Memories are those of the active memory version, as every read serves."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from serve_app.storage.jobs_repo import JOB_COLUMNS
from serve_app.storage.postgres import ACTIVE_VERSION, MEMORY_COLUMNS

Conn = asyncpg.Pool | asyncpg.Connection

# Per-session message counts by status, joined to the session rows.
_SESSION_ROWS = (
    "SELECT s.user_id, s.session_id, s.created_at, s.updated_at, s.metadata, s.raw_tokens,"
    " s.compressed_tokens, s.llm_input_tokens, s.llm_output_tokens, s.llm_calls, s.segments,"
    " s.flushes, s.summary,"
    " COALESCE(m.received, 0) AS received, COALESCE(m.processed, 0) AS processed,"
    " COALESCE(m.pending, 0) AS pending, COALESCE(m.buffered, 0) AS buffered,"
    " COALESCE(m.failed, 0) AS failed, COALESCE(e.memories, 0) AS memories"
    " FROM sessions s"
    " LEFT JOIN (SELECT session_id, count(*) AS received,"
    "  count(*) FILTER (WHERE status='done') AS processed,"
    "  count(*) FILTER (WHERE status='pending') AS pending,"
    "  count(*) FILTER (WHERE status='buffered') AS buffered,"
    "  count(*) FILTER (WHERE status='failed') AS failed"
    "  FROM messages WHERE user_id=$1 GROUP BY session_id) m USING (session_id)"
    " LEFT JOIN (SELECT session_id, count(*) AS memories FROM memory_entries"
    f"  WHERE user_id=$1 AND version = {ACTIVE_VERSION} GROUP BY session_id) e"
    "  USING (session_id)"
    " WHERE s.user_id=$1"
)


def _in_tenant(column: str, prefix: str) -> str:
    """SQL: the stored user id in `column` belongs to the tenant whose ids start with the text
    parameter `prefix` ('' for the default tenant, whose ids have no '/')."""
    rest = f"substr({column}, length({prefix}) + 1)"
    return f"(starts_with({column}, {prefix}) AND strpos({rest}, '/') = 0)"


MESSAGE_VIEW_COLUMNS = (
    "session_id, message_id, seq, role, name, content, ts, status, attempts, last_error,"
    " compressed, raw_tokens, compressed_tokens, received_at, processed_at"
)


async def list_users(conn: Conn, prefix: str, limit: int, after: str | None) -> list[dict]:
    """The users whose stored ids start with `prefix` (one tenant's), in id order after the
    stored id `after`, with their session, message and memory counts."""
    rows = await conn.fetch(
        "SELECT u.user_id, u.created_at,"
        " (SELECT count(*) FROM sessions s WHERE s.user_id = u.user_id) AS sessions,"
        " (SELECT count(*) FROM messages m WHERE m.user_id = u.user_id) AS messages,"
        " (SELECT count(*) FROM memory_entries e WHERE e.user_id = u.user_id"
        f"  AND e.version = {ACTIVE_VERSION}) AS memories"
        " FROM users u WHERE ($1::text IS NULL OR u.user_id > $1)"
        f" AND {_in_tenant('u.user_id', '$3')}"
        " ORDER BY u.user_id LIMIT $2",
        after,
        limit,
        prefix,
    )
    return [dict(r) for r in rows]


async def list_sessions(conn: Conn, user_id: str) -> list[dict]:
    """Every session of the user, newest activity first, with its pipeline counts."""
    rows = await conn.fetch(_SESSION_ROWS + " ORDER BY s.updated_at DESC, s.session_id", user_id)
    return [dict(r) for r in rows]


async def list_messages(
    conn: Conn, user_id: str, session_id: str, after_seq: int, limit: int
) -> list[dict]:
    """The session's messages in conversation order from `after_seq` on (exclusive)."""
    rows = await conn.fetch(
        f"SELECT {MESSAGE_VIEW_COLUMNS} FROM messages"
        " WHERE user_id=$1 AND session_id=$2 AND seq > $3 ORDER BY seq LIMIT $4",
        user_id,
        session_id,
        after_seq,
        limit,
    )
    return [dict(r) for r in rows]


async def session_exists(conn: Conn, user_id: str, session_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM sessions WHERE user_id=$1 AND session_id=$2", user_id, session_id
        )
    )


async def source_messages(
    conn: Conn, user_id: str, session_id: str, message_ids: Sequence[str]
) -> list[dict]:
    """The messages a memory was built from, in conversation order."""
    rows = await conn.fetch(
        f"SELECT {MESSAGE_VIEW_COLUMNS} FROM messages WHERE user_id=$1 AND session_id=$2"
        " AND message_id = ANY($3::text[]) ORDER BY seq",
        user_id,
        session_id,
        list(message_ids),
    )
    return [dict(r) for r in rows]


async def revisions(conn: Conn, user_id: str, memory_id: str) -> list[dict]:
    """Text changes of a memory (consolidation merges), oldest first."""
    rows = await conn.fetch(
        "SELECT revision, old_text, new_text, old_source_ids,"
        " ARRAY(SELECT x::text FROM unnest(merged_ids) x) AS merged_ids,"
        " job_id::text AS job_id, created_at"
        " FROM memory_revisions WHERE user_id=$1 AND entry_id=$2 ORDER BY revision",
        user_id,
        uuid.UUID(memory_id),
    )
    return [dict(r) for r in rows]


_TOMBSTONE_COLUMNS = (
    "id::text AS id, entry, action, reason, superseded_by::text AS superseded_by,"
    " job_id::text AS job_id, created_at"
)


async def tombstones_of(conn: Conn, user_id: str, memory_id: str) -> list[dict]:
    """Tombstones that name the memory: its own (it was removed) and those of the memories it
    superseded, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_TOMBSTONE_COLUMNS} FROM memory_tombstones"
        " WHERE user_id=$1 AND (id=$2 OR superseded_by=$2) ORDER BY created_at, id",
        user_id,
        uuid.UUID(memory_id),
    )
    return [dict(r) for r in rows]


async def list_tombstones(conn: Conn, user_id: str, limit: int) -> list[dict]:
    """The user's removed memories, newest first."""
    rows = await conn.fetch(
        f"SELECT {_TOMBSTONE_COLUMNS} FROM memory_tombstones WHERE user_id=$1"
        " ORDER BY created_at DESC, id LIMIT $2",
        user_id,
        limit,
    )
    return [dict(r) for r in rows]


async def memories_created_after(
    conn: Conn,
    user_id: str | None,
    prefix: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict]:
    """Memories in the order they were written, after the (created_at, id) given: the feed, of
    one user or (None) of every user of the tenant whose stored ids start with `prefix`.
    Without a position, the latest `limit` (still oldest first)."""

    def scope(prefix_param: str) -> str:
        return f"($1::text IS NULL OR user_id=$1) AND {_in_tenant('user_id', prefix_param)}"

    if after is None:
        rows = await conn.fetch(
            f"SELECT * FROM (SELECT {MEMORY_COLUMNS} FROM memory_entries WHERE {scope('$3')}"
            f" AND version = {ACTIVE_VERSION} ORDER BY created_at DESC, id DESC LIMIT $2) x"
            " ORDER BY created_at, id",
            user_id,
            limit,
            prefix,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {MEMORY_COLUMNS} FROM memory_entries WHERE {scope('$5')}"
            f" AND version = {ACTIVE_VERSION} AND (created_at, id) > ($2, $3)"
            " ORDER BY created_at, id LIMIT $4",
            user_id,
            after[0],
            uuid.UUID(after[1]),
            limit,
            prefix,
        )
    return [dict(r) for r in rows]


async def memories_per_bucket(conn: Conn, user_id: str, bucket: str) -> list[dict]:
    """How many of the user's memories were written per `bucket` (minute, hour or day)."""
    if bucket not in ("minute", "hour", "day"):
        raise ValueError(f"unknown bucket {bucket!r}")
    rows = await conn.fetch(
        "SELECT date_trunc($2, created_at) AS start, count(*) AS memories"
        f" FROM memory_entries WHERE user_id=$1 AND version = {ACTIVE_VERSION}"
        " GROUP BY 1 ORDER BY 1",
        user_id,
        bucket,
    )
    return [dict(r) for r in rows]


async def list_jobs(conn: Conn, prefix: str | None, limit: int) -> list[dict]:
    """The latest jobs, newest first: every job (`prefix` None), or the jobs of one tenant's
    users."""
    scope = "TRUE" if prefix is None else f"user_id IS NOT NULL AND {_in_tenant('user_id', '$2')}"
    args = [limit] if prefix is None else [limit, prefix]
    rows = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE {scope} ORDER BY created_at DESC LIMIT $1", *args
    )
    return [dict(r) for r in rows]
