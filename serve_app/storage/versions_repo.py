"""Memory versions in PostgreSQL (schema in migrations/0005_memory_versions.sql): switching the
active vector generation (and with it the memory version every read serves), what a version
lacks, re-queueing what a rollback would otherwise lose, and dropping versions nobody can switch
back to.

A generation indexes exactly one memory version; several generations may share one (an
embedding rebuild keeps the version, a re-extraction makes a new one). The RetrievalRouter calls
these inside its switch transaction; no Ray in here.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from serve_app.storage.postgres import VERSION_SWITCH_LOCK

# Messages per extraction task queued for a version that lacks them (about one flush's worth).
REQUEUE_CHUNK = 20


class VersionBehind(RuntimeError):
    """A new memory version may not become active while done messages are missing from it."""


class GenerationIncomplete(RuntimeError):
    """A generation may not become active while entries of its version are not embedded in it."""


@dataclass(frozen=True)
class Switched:
    active: int  # generation now active
    memory_version: int
    replaced: int | None  # generation that was active (now 'previous')
    retired: list[tuple[int, str]]  # (generation, collection) no longer kept
    requeued: dict  # {"messages", "tasks"} queued for the worker (0 when none)


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


async def switch(
    conn: asyncpg.Connection, generation: int, allowed: tuple[str, ...] = ("building", "previous")
) -> Switched:
    """Inside the caller's transaction: make `generation` the active one. The one it replaces
    becomes 'previous' (rollback is switching back to it); any other previous one is retired.

    Waits for in-flight entry writes (they hold VERSION_SWITCH_LOCK shared until they commit).
    If the memory version changes: a 'building' version must lack no done message
    (VersionBehind: its job catches up first); a 'previous' one gets the messages it lacks
    queued for the worker, so nothing processed meanwhile goes missing.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", VERSION_SWITCH_LOCK)
    target = await conn.fetchrow(
        "SELECT generation, status, memory_version FROM vector_generations"
        " WHERE generation=$1 FOR UPDATE",
        generation,
    )
    if target is None:
        raise ValueError(f"no index generation {generation}")
    if target["status"] not in allowed:
        raise ValueError(f"generation {generation} is {target['status']!r}, cannot activate it")
    active = await conn.fetchrow(
        "SELECT generation, memory_version FROM vector_generations WHERE status='active' FOR UPDATE"
    )
    version = target["memory_version"]
    changes_version = active is None or active["memory_version"] != version
    if changes_version and target["status"] == "building":
        messages, sessions = await behind(conn, version)
        if messages:
            raise VersionBehind(
                f"memory version {version} is behind: {messages} done messages of {sessions}"
                " sessions are not in it yet"
            )
    retired = await conn.fetch(
        "UPDATE vector_generations SET status='retired' WHERE status='previous'"
        " AND generation <> $1 RETURNING generation, collection",
        generation,
    )
    # Out of the way first: at most one 'previous' row may exist at any time.
    await conn.execute(
        "UPDATE vector_generations SET status='retired' WHERE generation=$1", generation
    )
    await conn.execute("UPDATE vector_generations SET status='previous' WHERE status='active'")
    await conn.execute(
        "UPDATE vector_generations SET status='active', activated_at=now() WHERE generation=$1",
        generation,
    )
    requeued = {"messages": 0, "tasks": 0}
    if changes_version and target["status"] != "building":
        requeued = await requeue_missing(conn, version)
    return Switched(
        active=generation,
        memory_version=version,
        replaced=active["generation"] if active is not None else None,
        retired=[(r["generation"], r["collection"]) for r in retired],
        requeued=requeued,
    )


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
