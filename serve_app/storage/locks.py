"""The per-user advisory lock: every writer of a user's memories takes it shared, erasing the
user takes it exclusive, so an erasure never interleaves with a write. One key for all."""

from __future__ import annotations

import asyncpg
import psycopg

# Advisory-lock key of a user: a 64-bit hash of the user id (seed 7 keeps it apart from other
# advisory locks of the database).
USER_LOCK_SEED = 7


def user_key_sql(param: str) -> str:
    """SQL of the user's lock key, for the placeholder `param` ("$1" or "%s")."""
    return f"hashtextextended({param}, {USER_LOCK_SEED})"


async def lock_user_shared(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute(f"SELECT pg_advisory_xact_lock_shared({user_key_sql('$1')})", user_id)


async def try_lock_user_shared(conn: asyncpg.Connection, user_id: str) -> bool:
    return await conn.fetchval(
        f"SELECT pg_try_advisory_xact_lock_shared({user_key_sql('$1')})", user_id
    )


async def lock_user_exclusive(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute(f"SELECT pg_advisory_xact_lock({user_key_sql('$1')})", user_id)


def lock_user_shared_sync(conn: psycopg.Connection, user_id: str) -> None:
    """lock_user_shared for synchronous job code (inside the caller's transaction)."""
    conn.execute(f"SELECT pg_advisory_xact_lock_shared({user_key_sql('%s')})", (user_id,))
