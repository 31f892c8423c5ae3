"""The per-user advisory lock, one key for every writer of a user's data.

Writers (ingest worker, LLM step, retrieval's edits, jobs) hold it shared until their
transaction ends; erasing a user holds it exclusively, so an erase waits for in-flight work and
nothing is written for a user while that user is being erased. Transaction-scoped: it is
released by the commit or rollback, never by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

LockKind = Literal["shared", "exclusive"]

# Any constant works as the second argument; it must be the same everywhere.
_KEY = "hashtextextended({}, 7)"


def user_lock_sql(kind: LockKind, *, wait: bool = True, placeholder: str = "$1") -> str:
    """The statement that takes one user's lock: `kind` shared or exclusive; `wait` False
    for the try form (it returns whether the lock was taken); `placeholder` the driver's
    parameter ("$1" for asyncpg, "%s" for psycopg) that stands for the user id."""
    if kind not in ("shared", "exclusive"):
        raise ValueError(f"unknown lock kind {kind!r}")
    func = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    if kind == "shared":
        func += "_shared"
    return f"SELECT {func}({_KEY.format(placeholder)})"


async def lock_users_shared(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
    """Wait for the shared lock of each user (in a fixed order: no deadlock between writers)."""
    for uid in sorted(set(user_ids)):
        await conn.execute(user_lock_sql("shared"), uid)


async def try_lock_user_shared(conn: asyncpg.Connection, user_id: str) -> bool:
    """The shared lock if the user is not being erased; False (and no lock) if they are."""
    return bool(await conn.fetchval(user_lock_sql("shared", wait=False), user_id))


async def lock_user_exclusive(conn: asyncpg.Connection, user_id: str) -> None:
    """Wait until no transaction writes for the user, and keep others out until commit."""
    await conn.execute(user_lock_sql("exclusive"), user_id)


def lock_user_sync(conn: Any, user_id: str, kind: LockKind = "shared") -> None:
    """The same lock on a synchronous (psycopg) connection, for the job drivers."""
    conn.execute(user_lock_sql(kind, placeholder="%s"), (user_id,))
