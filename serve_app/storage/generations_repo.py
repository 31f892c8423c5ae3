"""Index generations in PostgreSQL (`vector_generations`, `generation_members`; schema in
migrations/0003_jobs.sql and 0005_memory_versions.sql).

A generation is one set of Qdrant collections filled by one embedding model; it indexes one
memory version. Statuses: building -> active -> previous -> retired (at most one active and
one previous). `generation_members` records the entries already embedded into a generation whose
model the Embedder group does not run (a rebuild's target), so the catch-up sweep knows what is
left. The lifecycle itself (which calls these) is serve_app/retrieval/generations.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from serve_app.storage import memory_versions_repo
from serve_app.storage.postgres import VERSION_SWITCH_LOCK

Conn = asyncpg.Connection | asyncpg.Pool

GENERATION_COLUMNS = (
    "generation, embedding_model, dim, collection, status, memory_version, extraction"
)


class GenerationIncomplete(RuntimeError):
    """A generation may not become active while entries of its version are not embedded in it."""


@dataclass(frozen=True)
class Switched:
    active: int  # the generation made active
    memory_version: int
    replaced: int | None  # the generation it replaced (status 'previous')
    retired: list[tuple[int, str]]  # (generation, collection) no longer kept
    requeued: dict  # {"messages", "tasks"} queued for the worker (0 when none)


async def ensure_first(conn: Conn, model: str, dim: int, collection: str) -> None:
    """Generation 0 (the Embedder's model, the base collection), active, unless it exists."""
    await conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
        " status, activated_at) VALUES (0, $1, $2, $3, 'active', now())"
        " ON CONFLICT DO NOTHING",
        model,
        dim,
        collection,
    )


async def live(conn: Conn) -> list[asyncpg.Record]:
    """Every generation not retired, oldest first."""
    return await conn.fetch(
        f"SELECT {GENERATION_COLUMNS} FROM vector_generations WHERE status <> 'retired'"
        " ORDER BY generation"
    )


async def get(conn: Conn, generation: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {GENERATION_COLUMNS} FROM vector_generations WHERE generation=$1", generation
    )


async def building(conn: Conn, model: str, memory_version: int) -> asyncpg.Record | None:
    """The generation being built for `model` over `memory_version`, if any."""
    return await conn.fetchrow(
        f"SELECT {GENERATION_COLUMNS} FROM vector_generations"
        " WHERE status='building' AND embedding_model=$1 AND memory_version=$2",
        model,
        memory_version,
    )


async def previous(conn: Conn) -> int | None:
    """The generation a rollback switches back to."""
    return await conn.fetchval("SELECT generation FROM vector_generations WHERE status='previous'")


async def insert_building(
    conn: asyncpg.Connection,
    model: str,
    dim: int,
    collection_prefix: str,
    memory_version: int,
    extraction: dict | None,
) -> tuple[int, list[tuple[int, str]]]:
    """Inside the caller's transaction: a new 'building' generation (collection
    `<prefix>__g<n>`); any other unfinished build is abandoned (retired), since one rebuild
    runs at a time. Returns (its number, [(abandoned generation, its collection)])."""
    abandoned = await conn.fetch(
        "UPDATE vector_generations SET status='retired' WHERE status='building'"
        " RETURNING generation, collection"
    )
    n = await conn.fetchval("SELECT COALESCE(max(generation), 0) + 1 FROM vector_generations")
    await conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
        " status, memory_version, extraction) VALUES ($1, $2, $3, $4, 'building', $5, $6)",
        n,
        model,
        dim,
        f"{collection_prefix}__g{n}",
        memory_version,
        extraction,
    )
    return n, [(r["generation"], r["collection"]) for r in abandoned]


async def unindexed_entries(
    conn: Conn, generation: int, memory_version: int, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` entries of `memory_version` not embedded into `generation` yet."""
    return await conn.fetch(
        "SELECT e.id::text AS id, e.user_id, e.session_id, e.ts, e.speaker, e.index_text,"
        " e.updated_at FROM memory_entries e WHERE e.version=$3 AND NOT EXISTS (SELECT 1"
        " FROM generation_members m WHERE m.generation=$1 AND m.entry_id=e.id) LIMIT $2",
        generation,
        limit,
        memory_version,
    )


async def missing_count(conn: Conn, generation: int) -> int:
    """Entries of the generation's memory version that have no vector in it yet."""
    return await conn.fetchval(
        "SELECT count(*) FROM memory_entries e WHERE e.version = (SELECT memory_version"
        " FROM vector_generations WHERE generation=$1) AND NOT EXISTS (SELECT 1 FROM"
        " generation_members m WHERE m.generation=$1 AND m.entry_id=e.id)",
        generation,
    )


async def mark_members(conn: Conn, generation: int, items: Sequence[tuple[str, datetime]]) -> None:
    """Record entries as embedded into `generation`, unless changed since they were read
    ((id, updated_at) pairs): a changed text is embedded again by the next sweep."""
    await conn.executemany(
        "INSERT INTO generation_members (generation, entry_id) SELECT $1, id"
        " FROM memory_entries WHERE id=$2::uuid AND updated_at=$3 ON CONFLICT DO NOTHING",
        [(generation, i, u) for i, u in items],
    )


async def forget_member(conn: Conn, entry_id: str) -> None:
    """The entry's text changed: every generation that embeds it itself must embed it again."""
    await conn.execute("DELETE FROM generation_members WHERE entry_id=$1::uuid", entry_id)


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
        messages, sessions = await memory_versions_repo.behind(conn, version)
        if messages:
            raise memory_versions_repo.VersionBehind(
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
        requeued = await memory_versions_repo.requeue_missing(conn, version)
    return Switched(
        active=generation,
        memory_version=version,
        replaced=active["generation"] if active is not None else None,
        retired=[(r["generation"], r["collection"]) for r in retired],
        requeued=requeued,
    )
