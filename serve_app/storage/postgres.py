"""PostgreSQL (asyncpg): connection pool, migrations and the queries every component shares."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

import asyncpg

from serve_app.model.audit import AuditRecord
from serve_app.model.entries import EntryRow
from serve_app.model.messages import NewMessage, StoredMessage
from serve_app.storage import audit_repo, locks

# Any constant works: serialises concurrent migration runs across processes.
_MIGRATION_LOCK = 724_411_001


# Serialises writes of memory entries with switches of the active memory version: writers
# (ingest worker, LLM step) hold it shared from reading the active version to their commit; a
# switch holds it exclusively, so no entry is written into a version that stopped being active.
VERSION_SWITCH_LOCK = 724_411_002
# The memory version every read serves: the active vector generation's (1 before any exists).
ACTIVE_VERSION = (
    "COALESCE((SELECT memory_version FROM vector_generations WHERE status='active'), 1)"
)


def add_version_sql(version: str) -> str:
    """SQL for a message's `versions` with `version` (an SQL expression) added once."""
    return (
        f"CASE WHEN {version} = ANY(versions) THEN versions"
        f" ELSE array_append(versions, {version}) END"
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection's release back to the pool, without asyncpg's default reset query
    (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL): that is one more round trip per acquire,
    and a search acquires twice. Nothing here leaves session state behind - every advisory lock
    is transaction-level, nothing LISTENs or SETs a session variable - and asyncpg still rolls
    back a transaction left open before this runs."""


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 8) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
    )


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("serve_app.storage") / "migrations"
    out = []
    for f in folder.iterdir():
        if f.name.endswith(".sql"):
            version = int(f.name.split("_", 1)[0])
            out.append((version, f.name, f.read_text()))
    return sorted(out)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply pending migrations once, whatever the number of processes starting together."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    return applied


_MESSAGE_FIELDS = ("user_id", "session_id", "message_id", "seq", "role", "name", "content", "ts")
MESSAGE_COLUMNS = ", ".join((*_MESSAGE_FIELDS, "metadata"))
MEMORY_COLUMNS = (
    "id::text AS id, user_id, session_id, kind, text, index_text, ts, weekday, speaker,"
    " source_message_ids, topic_id, metadata, importance, embedding_model, created_at,"
    " updated_at, version"
)

# $1 user, $2 ids, $3 memory version (NULL: the active one).
_MEMORIES_BY_IDS = (
    f"SELECT {MEMORY_COLUMNS} FROM memory_entries WHERE user_id=$1 AND id = ANY($2::uuid[])"
    f" AND version = COALESCE($3, {ACTIVE_VERSION})"
)


class Repository:
    """The queries, one method each; connections come from the shared pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- ingestion -------------------------------------------------------------------------

    async def add_messages(
        self,
        user_id: str,
        session_id: str,
        messages: Sequence[NewMessage],
        session_metadata: dict | None,
        audit: AuditRecord | None = None,
    ) -> list[str]:
        """Store the messages not stored yet; returns the ids that were new. One transaction,
        with the audit row (the new message ids) when given."""
        ids = [m.message_id for m in messages]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO users (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
            )
            await conn.execute(
                "INSERT INTO sessions (user_id, session_id, metadata) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                user_id,
                session_id,
                session_metadata or {},
            )
            # The row lock orders concurrent requests to one session, so seq stays dense.
            next_seq = await conn.fetchval(
                "SELECT next_seq FROM sessions WHERE user_id=$1 AND session_id=$2 FOR UPDATE",
                user_id,
                session_id,
            )
            existing = {
                r["message_id"]
                for r in await conn.fetch(
                    "SELECT message_id FROM messages"
                    " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])",
                    user_id,
                    session_id,
                    ids,
                )
            }
            new = [m for m in messages if m.message_id not in existing]
            if new:
                await conn.executemany(
                    "INSERT INTO messages (user_id, session_id, message_id, seq, role, name,"
                    " content, ts, ts_provided, metadata) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                    [
                        (
                            user_id,
                            session_id,
                            m.message_id,
                            next_seq + i,
                            m.role,
                            m.name,
                            m.content,
                            m.ts,
                            m.ts_provided,
                            m.metadata,
                        )
                        for i, m in enumerate(new)
                    ],
                )
            await conn.execute(
                "UPDATE sessions SET next_seq = next_seq + $3, updated_at = now(),"
                " metadata = CASE WHEN $4::jsonb IS NULL THEN metadata ELSE metadata || $4 END"
                " WHERE user_id=$1 AND session_id=$2",
                user_id,
                session_id,
                len(new),
                session_metadata,
            )
            if audit is not None:
                await audit_repo.append(conn, audit.with_objects([m.message_id for m in new]))
        return [m.message_id for m in new]

    async def count_unfinished(self, user_id: str, session_id: str, ids: Sequence[str]) -> int:
        """Messages among `ids` not searchable yet (pending, or waiting in the buffers)."""
        return await self.pool.fetchval(
            "SELECT count(*) FROM messages WHERE user_id=$1 AND session_id=$2"
            " AND message_id = ANY($3::text[]) AND status IN ('pending', 'buffered')",
            user_id,
            session_id,
            list(ids),
        )

    # --- the worker's side -----------------------------------------------------------------

    @staticmethod
    async def lock_users_shared(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
        await locks.lock_users_shared(conn, user_ids)

    @staticmethod
    async def previous_messages(
        conn: asyncpg.Connection, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str], StoredMessage]:
        """For each (user, session, seq), the message just before `seq` in that session."""
        out: dict[tuple[str, str], StoredMessage] = {}
        for user_id, session_id, seq in keys:
            r = await conn.fetchrow(
                f"SELECT {MESSAGE_COLUMNS}"
                " FROM messages WHERE user_id=$1 AND session_id=$2 AND seq < $3"
                " ORDER BY seq DESC LIMIT 1",
                user_id,
                session_id,
                seq,
            )
            if r is not None:
                out[(user_id, session_id)] = message_from_row(r)
        return out

    @staticmethod
    async def insert_entries(conn: asyncpg.Connection, entries: Sequence[EntryRow]) -> None:
        await conn.executemany(
            "INSERT INTO memory_entries (id, user_id, session_id, kind, text, index_text, ts,"
            " weekday, speaker, source_message_ids, topic_id, metadata, importance,"
            " embedding_model, version)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
            " ON CONFLICT (id) DO NOTHING",
            [
                (
                    uuid.UUID(e.id),
                    e.user_id,
                    e.session_id,
                    e.kind,
                    e.text,
                    e.index_text,
                    e.ts,
                    e.weekday,
                    e.speaker,
                    e.source_message_ids,
                    e.topic_id,
                    e.metadata,
                    e.importance,
                    e.embedding_model,
                    e.version,
                )
                for e in entries
            ],
        )

    @staticmethod
    async def lock_active_version(conn: asyncpg.Connection) -> tuple[int, dict]:
        """The active memory version and how it was built ({} for the service's own
        configuration), held until the caller's transaction ends: a switch waits for it, so
        entries written in this transaction land in a version that is still active."""
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", VERSION_SWITCH_LOCK)
        return await active_version(conn)

    @staticmethod
    async def bump_index_revision(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
        await conn.execute(
            "UPDATE users SET index_revision = index_revision + 1 WHERE user_id = ANY($1::text[])",
            sorted(set(user_ids)),
        )

    # --- reads -----------------------------------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM users WHERE user_id=$1", user_id))

    async def index_revision(self, user_id: str) -> int | None:
        return await self.pool.fetchval(
            "SELECT index_revision FROM users WHERE user_id=$1", user_id
        )

    async def index_docs(self, user_id: str, version: int | None = None) -> list[asyncpg.Record]:
        """What BM25 and the rerank arrays index: the user's entries of `version` (default: the
        active one), in conversation order within each session (the neighbour signals need it;
        entries of one session share its date, so `ts` alone does not order them)."""
        return await self.pool.fetch(
            "SELECT e.id::text AS id, e.text, e.index_text, e.session_id, e.ts, e.speaker"
            " FROM memory_entries e LEFT JOIN messages m ON m.user_id = e.user_id"
            " AND m.session_id = e.session_id AND m.message_id = e.source_message_ids[1]"
            f" WHERE e.user_id=$1 AND e.version = COALESCE($2, {ACTIVE_VERSION})"
            " ORDER BY e.session_id, m.seq NULLS LAST, e.ts, e.id",
            user_id,
            version,
        )

    async def memories_by_ids(
        self, user_id: str, ids: Sequence[str], version: int | None = None
    ) -> dict[str, dict]:
        """Entries of memory version `version` (default: the active one) among `ids`."""
        rows = await self.pool.fetch(
            _MEMORIES_BY_IDS,
            user_id,
            [uuid.UUID(i) for i in ids],
            version,
        )
        return {r["id"]: dict(r) for r in rows}

    async def memories_and_revision(
        self, user_id: str, ids: Sequence[str], version: int | None = None
    ) -> tuple[dict[str, dict], int | None]:
        """`memories_by_ids` and the user's `index_revision` in one round trip (a search's only
        one when its BM25 cache is current); ({}, None) when the user does not exist."""
        rows = await self.pool.fetch(
            "SELECT u.index_revision AS index_revision_, e.* FROM users u"
            f" LEFT JOIN LATERAL ({_MEMORIES_BY_IDS}) e ON true WHERE u.user_id=$1",
            user_id,
            [uuid.UUID(i) for i in ids],
            version,
        )
        if not rows:
            return {}, None
        found = {}
        for r in rows:
            if r["id"] is not None:
                row = dict(r)
                del row["index_revision_"]
                found[r["id"]] = row
        return found, rows[0]["index_revision_"]

    async def get_memory(self, user_id: str, memory_id: str) -> dict | None:
        r = await self.pool.fetchrow(
            f"SELECT {MEMORY_COLUMNS} FROM memory_entries WHERE user_id=$1 AND id=$2"
            f" AND version = {ACTIVE_VERSION}",
            user_id,
            uuid.UUID(memory_id),
        )
        return dict(r) if r else None

    async def list_memories(
        self,
        user_id: str,
        session_id: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[dict]:
        args: list[Any] = [user_id]
        where = ["user_id=$1", f"version = {ACTIVE_VERSION}"]
        if session_id is not None:
            args.append(session_id)
            where.append(f"session_id=${len(args)}")
        if after is not None:
            args.extend([after[0], uuid.UUID(after[1])])
            where.append(f"(ts, id) > (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self.pool.fetch(
            f"SELECT {MEMORY_COLUMNS} FROM memory_entries WHERE {' AND '.join(where)}"
            f" ORDER BY ts, id LIMIT ${len(args)}",
            *args,
        )
        return [dict(r) for r in rows]

    async def session_status(self, user_id: str, session_id: str) -> dict | None:
        s = await self.pool.fetchrow(
            "SELECT session_id, created_at, updated_at, metadata, raw_tokens, compressed_tokens,"
            " llm_input_tokens, llm_output_tokens, llm_calls, summary, segments, flushes"
            " FROM sessions WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
        )
        if s is None:
            return None
        counts = await self.pool.fetchrow(
            "SELECT count(*) AS received,"
            " count(*) FILTER (WHERE status='done') AS processed,"
            " count(*) FILTER (WHERE status='pending') AS pending,"
            " count(*) FILTER (WHERE status='buffered') AS buffered,"
            " count(*) FILTER (WHERE status='failed') AS failed"
            " FROM messages WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
        )
        memories = await self.pool.fetchval(
            "SELECT count(*) FROM memory_entries WHERE user_id=$1 AND session_id=$2"
            f" AND version = {ACTIVE_VERSION}",
            user_id,
            session_id,
        )
        return {"session": dict(s), "counts": dict(counts), "memories": memories}

    # --- changes ---------------------------------------------------------------------------

    async def update_memory(
        self,
        conn: asyncpg.Connection,
        user_id: str,
        memory_id: str,
        text: str | None,
        index_text: str | None,
        metadata: dict | None,
        importance: float | None,
    ) -> dict | None:
        r = await conn.fetchrow(
            "UPDATE memory_entries SET text = COALESCE($3, text),"
            " index_text = COALESCE($4, index_text), metadata = COALESCE($5, metadata),"
            " importance = COALESCE($6, importance), updated_at = now()"
            f" WHERE user_id=$1 AND id=$2 AND version = {ACTIVE_VERSION}"
            f" RETURNING {MEMORY_COLUMNS}",
            user_id,
            uuid.UUID(memory_id),
            text,
            index_text,
            metadata,
            importance,
        )
        return dict(r) if r else None

    @staticmethod
    async def delete_memory(conn: asyncpg.Connection, user_id: str, memory_id: str) -> bool:
        status = await conn.execute(
            f"DELETE FROM memory_entries WHERE user_id=$1 AND id=$2 AND version={ACTIVE_VERSION}",
            user_id,
            uuid.UUID(memory_id),
        )
        return status.endswith(" 1")

    @staticmethod
    async def lock_user_exclusive(conn: asyncpg.Connection, user_id: str) -> None:
        await locks.lock_user_exclusive(conn, user_id)

    @staticmethod
    async def delete_user(conn: asyncpg.Connection, user_id: str) -> bool:
        status = await conn.execute("DELETE FROM users WHERE user_id=$1", user_id)
        return status.endswith(" 1")


async def active_version(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, dict]:
    """(active memory version, its extraction parameters or {}) without any lock."""
    r = await conn.fetchrow(
        "SELECT memory_version, extraction FROM vector_generations WHERE status='active'"
    )
    if r is None:
        return 1, {}
    return r["memory_version"], r["extraction"] or {}


def message_from_row(r: asyncpg.Record) -> StoredMessage:
    """The one mapper of a `messages` row selected with MESSAGE_COLUMNS."""
    return StoredMessage(**{c: r[c] for c in _MESSAGE_FIELDS}, metadata=r["metadata"] or {})
