"""The database's answer to a readiness check."""

from __future__ import annotations

import asyncpg


async def server_version(pool: asyncpg.Pool) -> dict:
    return {"server_version": await pool.fetchval("SHOW server_version")}
