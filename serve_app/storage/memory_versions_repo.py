"""Memory versions in PostgreSQL (schema in migrations/0005_memory_versions.sql): what a version
lacks, re-queueing what a rollback would otherwise lose, new version numbers, and dropping the
versions nobody can switch back to.

A memory version is the set of entries one extraction configuration built. An index generation
indexes exactly one memory version; several generations may share one (an embedding rebuild
keeps the version, a re-extraction makes a new one). Switching generations
(`generations_repo.switch`) calls these inside its transaction.
"""

from __future__ import annotations

import asyncpg

# Messages per extraction task queued for a version that lacks them (about one flush's worth).
REQUEUE_CHUNK = 20


class VersionBehind(RuntimeError):
    """A new memory version may not become active while done messages are missing from it."""


async def behind(conn: asyncpg.Connection | asyncpg.Pool, version: int) -> tuple[int, int]:
    """(done messages, sessions) whose memories are not in `version` yet."""
    r = await conn.fetchrow(
        "SELECT count(*) AS messages, count(DISTINCT (user_id, session_id)) AS sessions"
        " FROM messages WHERE status='done' AND NOT ($1 = ANY(versions))",
        version,
    )
    return r["messages"], r["sessions"]


async def requeue_missing(conn: asyncpg.Connection, version: int) -> dict:
    """Queue extraction tasks for the done messages missing from `version` (messages processed
    while another version was active), in chunks of REQUEUE_CHUNK per session, and set them
    back to 'buffered'. The LLM step of the ingest worker then writes their entries into the
    active version (with the LLM, or extractive without one) and marks them done again. Call
    inside the switch transaction, after `version` became active."""
    counts = await conn.fetch(
        "WITH missing AS ("
        "  SELECT user_id, session_id, message_id, seq,"
        "  (row_number() OVER (PARTITION BY user_id, session_id ORDER BY seq) - 1) / $2 AS chunk"
        "  FROM messages WHERE status='done' AND NOT ($1 = ANY(versions))),"
        " grouped AS (SELECT user_id, session_id, chunk,"
        "  array_agg(message_id ORDER BY seq) AS ids FROM missing GROUP BY 1, 2, 3)"
        " INSERT INTO llm_tasks (user_id, session_id, kind, flush_index, message_ids)"
        " SELECT user_id, session_id, 'extract', -nextval('requeue_flush_seq')::int, ids"
        " FROM grouped ORDER BY user_id, session_id, chunk"
        " RETURNING cardinality(message_ids) AS n",
        version,
        REQUEUE_CHUNK,
    )
    await conn.execute(
        "UPDATE messages SET status='buffered' WHERE status='done' AND NOT ($1 = ANY(versions))",
        version,
    )
    return {"messages": sum(r["n"] for r in counts), "tasks": len(counts)}


async def orphan_versions(conn: asyncpg.Connection | asyncpg.Pool) -> list[int]:
    """Memory versions no live generation indexes any more (nobody can switch to them)."""
    rows = await conn.fetch(
        "SELECT DISTINCT memory_version FROM vector_generations WHERE status='retired'"
        " EXCEPT SELECT memory_version FROM vector_generations WHERE status <> 'retired'"
    )
    return sorted(r["memory_version"] for r in rows)


async def drop_orphan_versions(pool: asyncpg.Pool) -> dict[int, int]:
    """Delete the entries of orphaned memory versions; {version: entries deleted}."""
    out: dict[int, int] = {}
    for v in await orphan_versions(pool):
        status = await pool.execute("DELETE FROM memory_entries WHERE version=$1", v)
        n = int(status.rsplit(" ", 1)[1])
        if n:
            out[v] = n
    return out


async def next_memory_version(conn: asyncpg.Connection) -> int:
    """A version number never used before (retired generations keep theirs)."""
    return await conn.fetchval(
        "SELECT GREATEST((SELECT max(memory_version) FROM vector_generations),"
        " (SELECT max(version) FROM memory_entries), 1) + 1"
    )
