"""One user's data out and in: the rows of every table that holds it, as JSON objects.

PostgreSQL turns rows into JSON (`to_jsonb`) and JSON back into typed rows
(`jsonb_populate_recordset`), so each column keeps its exact value (timestamps to the
microsecond, arrays, jsonb) without a mapping per column here. The user id is left out of every
record and set from the path on import, so an export can be loaded under another user id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from serve_app.model.audit import AuditRecord
from serve_app.security.principal import DEFAULT_TENANT
from serve_app.storage import audit_repo, locks
from serve_app.storage.postgres import ACTIVE_VERSION


@dataclass(frozen=True)
class Kind:
    """One record type of an export: the table it comes from, which of its rows belong to the
    user, their order, and columns left out (internal state that is not the user's data)."""

    name: str
    table: str
    where: str  # SQL over alias t, $1 = user id
    order: str
    omit: tuple[str, ...] = ()
    # Inserted with ON CONFLICT DO NOTHING: rows that may exist already (a shared job).
    shared: bool = False
    # The row names the user in `user_id`: left out of the record, set from the path.
    owned: bool = True


_USER_JOBS = (
    "(t.user_id = $1 OR t.id IN (SELECT job_id FROM consolidation_groups WHERE user_id=$1))"
)

# In the order an import inserts them (foreign keys).
KINDS: tuple[Kind, ...] = (
    # index_revision is the search replicas' cache key: an import starts a fresh one.
    Kind("user", "users", "t.user_id = $1", "t.user_id", omit=("index_revision",)),
    Kind("session", "sessions", "t.user_id = $1", "t.session_id"),
    # Created with each session by a trigger: an import overwrites that row.
    Kind("session_buffer", "session_buffers", "t.user_id = $1", "t.session_id"),
    Kind("message", "messages", "t.user_id = $1", "t.session_id, t.seq"),
    Kind("flush_request", "flush_requests", "t.user_id = $1", "t.session_id"),
    # A lease belongs to a worker of the exporting service.
    Kind(
        "llm_task",
        "llm_tasks",
        "t.user_id = $1",
        "t.session_id, t.kind, t.flush_index",
        omit=("lease_token", "leased_until"),
    ),
    Kind("memory", "memory_entries", "t.user_id = $1", "t.version, t.ts, t.id"),
    Kind("link", "memory_links", "t.user_id = $1", "t.src, t.dst"),
    # The revision number is a sequence shared by every user: an import takes new ones, in order.
    Kind("revision", "memory_revisions", "t.user_id = $1", "t.revision", omit=("revision",)),
    Kind("tombstone", "memory_tombstones", "t.user_id = $1", "t.created_at, t.id"),
    # A job ran for this user alone (for_user) or for every user (a consolidation that
    # touched the user's entries).
    # Its tenant is the importing caller's.
    Kind(
        "job",
        "jobs",
        _USER_JOBS,
        "t.created_at, t.id",
        omit=("tenant",),
        shared=True,
        owned=False,
    ),
    Kind(
        "job_item",
        "job_items",
        "t.job_id IN (SELECT id FROM jobs WHERE user_id = $1)",
        "t.job_id, t.stage, t.item_id",
        shared=True,
        owned=False,
    ),
    Kind("consolidation", "consolidation_groups", "t.user_id = $1", "t.job_id, t.anchor_id"),
)
BY_NAME = {k.name: k for k in KINDS}


class ImportConflict(Exception):
    """The user exists already, or an id of the import is taken by another user."""


class ImportRejected(Exception):
    """PostgreSQL refused a record (a value of the wrong type, a missing reference)."""


def _select(kind: Kind) -> str:
    record = "to_jsonb(t)" + "".join(f" - '{c}'" for c in kind.omit)
    if kind.owned:
        record += " - 'user_id'"
    elif kind.name == "job":
        record += " - 'user_id' || jsonb_build_object('for_user', t.user_id IS NOT NULL)"
    return (
        f"SELECT ({record})::text AS r FROM {kind.table} t WHERE {kind.where} ORDER BY {kind.order}"
    )


def _as_row(kind: Kind, record: dict, user_id: str, tenant: str) -> dict:
    """An exported record as the row to insert for `tenant`'s (stored) `user_id`."""
    row = dict(record)
    if kind.owned:
        row["user_id"] = user_id
    elif kind.name == "job":
        row["user_id"] = user_id if row.pop("for_user", False) else None
        row["tenant"] = tenant
    return row


async def record_fields(pool: asyncpg.Pool) -> dict[str, set[str]]:
    """Per kind, the keys an exported record may have: its table's columns as exported."""
    rows = await pool.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
        sorted({k.table for k in KINDS}),
    )
    columns: dict[str, set[str]] = {}
    for r in rows:
        columns.setdefault(r["table_name"], set()).add(r["column_name"])
    out = {}
    for kind in KINDS:
        names = columns[kind.table] - set(kind.omit)
        if kind.owned:
            names -= {"user_id"}
        elif kind.name == "job":
            names = (names - {"user_id"}) | {"for_user"}
        out[kind.name] = names
    return out


async def export_user(
    pool: asyncpg.Pool, user_id: str, batch: int = 500
) -> AsyncIterator[tuple[str, str | int]]:
    """("memory_version", the active one) first, then (kind, record as JSON text) for every row
    of the user, all from one snapshot (REPEATABLE READ): a concurrent write is wholly in the
    export or not at all. Nothing when the user is unknown."""
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        if not await conn.fetchval("SELECT 1 FROM users WHERE user_id=$1", user_id):
            return
        yield "memory_version", await conn.fetchval(f"SELECT {ACTIVE_VERSION}")
        for kind in KINDS:
            async for r in conn.cursor(_select(kind), user_id, prefetch=batch):
                yield kind.name, r["r"]


class UserImport:
    """An import held open: `begin` inserts everything in a transaction and returns the memory
    entries to index; `commit` or `rollback` ends it. The vectors are written between the two, so
    a failure anywhere leaves nothing in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, user_id: str, tenant: str = DEFAULT_TENANT) -> None:
        """`user_id`: the stored (tenant-scoped) id; `tenant`: the importing caller's."""
        self.pool = pool
        self.user_id = user_id
        self.tenant = tenant
        self._conn: asyncpg.Connection | None = None
        self._tx: asyncpg.transaction.Transaction | None = None
        self.committed = False

    async def begin(
        self,
        records: dict[str, Sequence[dict]],
        memory_version: int | None,
        audit: AuditRecord | None = None,
    ) -> list[asyncpg.Record]:
        """Insert `records` (kind -> exported records); `memory_version` was active where they
        were exported: its entries join the memory version active here. `audit` is appended to
        the audit log in the same transaction."""
        self._conn = await self.pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        conn = self._conn
        await locks.lock_user_exclusive(conn, self.user_id)
        if await conn.fetchval("SELECT 1 FROM users WHERE user_id=$1", self.user_id):
            raise ImportConflict(f"user {self.user_id!r} exists: import loads an empty user only")
        active = await conn.fetchval(f"SELECT {ACTIVE_VERSION}")
        if memory_version is not None and memory_version != active:
            records = remap_version(records, memory_version, active)
        for kind in KINDS:
            rows = [_as_row(kind, r, self.user_id, self.tenant) for r in records.get(kind.name, ())]
            if kind.name == "user" and not rows:
                rows = [{"user_id": self.user_id}]
            if rows:
                await self._insert(conn, kind, rows)
        if audit is not None:
            await audit_repo.append(conn, audit)
        return await conn.fetch(
            "SELECT id::text AS id, index_text, session_id, ts, speaker, version"
            " FROM memory_entries WHERE user_id=$1 ORDER BY version, id",
            self.user_id,
        )

    async def _insert(self, conn: asyncpg.Connection, kind: Kind, rows: list[dict]) -> None:
        # Columns the records name, so every other one takes its default.
        cols = sorted({c for r in rows for c in r})
        names = ", ".join(cols)
        sql = (
            f"INSERT INTO {kind.table} ({names}) SELECT {names}"
            f" FROM jsonb_populate_recordset(NULL::{kind.table}, $1::jsonb)"
        )
        if kind.name == "user":
            # A fresh cache key no earlier life of this user id can have reached.
            sql = (
                f"INSERT INTO users ({names}, index_revision) SELECT {names},"
                " (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                " FROM jsonb_populate_recordset(NULL::users, $1::jsonb)"
            )
        elif kind.name == "session_buffer":
            sets = ", ".join(
                f"{c} = EXCLUDED.{c}" for c in cols if c not in ("user_id", "session_id")
            )
            sql += f" ON CONFLICT (user_id, session_id) DO UPDATE SET {sets}"
        elif kind.shared:
            sql += " ON CONFLICT DO NOTHING"
        try:
            async with conn.transaction():  # a savepoint: the error names this kind
                await conn.execute(sql, rows)
        except asyncpg.UniqueViolationError as e:
            raise ImportConflict(f"{kind.name} records: {e.detail or e}") from None
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
            raise ImportRejected(f"{kind.name} records: {e}") from None

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def _end(self, commit: bool) -> None:
        if self._tx is None or self._conn is None:
            return
        try:
            if commit:
                await self._tx.commit()
                self.committed = True
            else:
                await self._tx.rollback()
        finally:
            await self.pool.release(self._conn)
            self._tx = self._conn = None


def remap_version(
    records: dict[str, Sequence[dict]], old: int, new: int
) -> dict[str, Sequence[dict]]:
    """The records with memory version `old` renamed `new` (entries, and the versions each
    message is done in). Version numbers are each service's own; the served one is what
    matters to the user."""

    def entry(r: dict) -> dict:
        return {**r, "version": new} if r.get("version") == old else r

    def message(r: dict) -> dict:
        versions = r.get("versions")
        if not isinstance(versions, list):
            return r
        return {**r, "versions": [new if v == old else v for v in versions]}

    return {
        **records,
        "memory": [entry(r) for r in records.get("memory", ())],
        "message": [message(r) for r in records.get("message", ())],
    }


async def erase_user_traces(conn: asyncpg.Connection, user_id: str) -> None:
    """What erasing a user removes beyond the rows that cascade from `users`: the jobs run for
    that user alone, and the done-items of other jobs that name the user or their entries."""
    await conn.execute(
        "DELETE FROM job_items WHERE item_id = $1 OR item_id IN"
        " (SELECT id::text FROM memory_entries WHERE user_id = $1)",
        user_id,
    )
    await conn.execute("DELETE FROM jobs WHERE user_id = $1", user_id)
