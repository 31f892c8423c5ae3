"""What backup and restore ask PostgreSQL: whether a database is empty, its server version,
what a backup holds, and the entries whose vectors a restore re-derives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from serve_app.storage import generations_repo


async def is_empty(conn: asyncpg.Connection) -> bool:
    """No table in the current schema: a database a restore may fill."""
    return not await conn.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
    )


async def server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def summary(conn: asyncpg.Connection) -> dict:
    """Row counts a restore is checked against, and the live index generations."""
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM messages) AS messages,"
        " (SELECT count(*) FROM memory_entries) AS memories"
    )
    gens = await generations_repo.live(conn)
    return {
        **dict(counts),
        "generations": [
            {k: g[k] for k in ("generation", "embedding_model", "dim", "collection", "status",
                               "memory_version")}
            for g in gens
        ],
    }  # fmt: skip


async def entries_of_version(
    conn: asyncpg.Connection, version: int, batch: int
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every entry of memory version `version` (what its vectors are made of), `batch` at a time."""
    async with conn.transaction(readonly=True):
        rows: list[asyncpg.Record] = []
        async for r in conn.cursor(
            "SELECT id::text AS id, user_id, session_id, ts, speaker, index_text"
            " FROM memory_entries WHERE version = $1 ORDER BY id",
            version,
        ):
            rows.append(r)
            if len(rows) == batch:
                yield rows
                rows = []
        if rows:
            yield rows


async def forget_members(conn: asyncpg.Connection, generation: int) -> None:
    """The generation holds none of its entries (the catch-up sweep embeds them again)."""
    await conn.execute("DELETE FROM generation_members WHERE generation = $1", generation)
