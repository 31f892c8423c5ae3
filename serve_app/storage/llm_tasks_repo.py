"""PostgreSQL queries of LLM memory construction: queued LLM work, its leases, failures,
retries, session summaries and per-backend usage (schema in migrations/0004_llm.sql).

A flushed short-term buffer whose memories need the LLM becomes an 'extract' task in the
transaction that takes its messages out of the buffers; its messages stay 'buffered' until the
task's entries are committed, in the transaction that deletes the task. So an LLM outage, a
crash or a restart leaves the work in PostgreSQL, never only in a replica's memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from serve_app.llm.accounting import LLMUsage
from serve_app.model.messages import StoredMessage
from serve_app.storage.postgres import ACTIVE_VERSION, MESSAGE_COLUMNS, message_from_row

Executor = asyncpg.Connection | asyncpg.Pool
SUMMARY_INDEX = -1  # flush_index of a session's summary task


@dataclass(frozen=True)
class TaskSegment:
    topic_index: int
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class LLMTask:
    user_id: str
    session_id: str
    kind: str  # extract | summary
    flush_index: int
    segments: tuple[TaskSegment, ...]
    message_ids: tuple[str, ...]
    attempts: int  # including this one
    lease_token: uuid.UUID

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.user_id, self.session_id, self.kind, self.flush_index


@dataclass(frozen=True)
class SourceRow:
    """A message with its compressed text (None when compression was off)."""

    message: StoredMessage
    compressed: str | None


def _task(r: asyncpg.Record) -> LLMTask:
    return LLMTask(
        user_id=r["user_id"],
        session_id=r["session_id"],
        kind=r["kind"],
        flush_index=r["flush_index"],
        segments=tuple(
            TaskSegment(s["topic_index"], tuple(s["message_ids"])) for s in r["segments"] or []
        ),
        message_ids=tuple(r["message_ids"]),
        attempts=r["attempts"],
        lease_token=r["lease_token"],
    )


_KEY = "user_id=$1 AND session_id=$2 AND kind=$3 AND flush_index=$4"


class LLMTasksRepo:
    """Static queries on a caller's connection (inside its transaction) or on a pool."""

    @staticmethod
    async def enqueue_extract(
        conn: Executor,
        user_id: str,
        session_id: str,
        flush_index: int,
        segments: Sequence[TaskSegment],
    ) -> None:
        ids = [m for s in segments for m in s.message_ids]
        await conn.execute(
            "INSERT INTO llm_tasks (user_id, session_id, kind, flush_index, segments, message_ids)"
            " VALUES ($1, $2, 'extract', $3, $4, $5) ON CONFLICT DO NOTHING",
            user_id,
            session_id,
            flush_index,
            [{"topic_index": s.topic_index, "message_ids": list(s.message_ids)} for s in segments],
            ids,
        )

    @staticmethod
    async def enqueue_summary(conn: Executor, user_id: str, session_id: str) -> bool:
        """Ask for the session's summary (again); False when the session does not exist."""
        row = await conn.fetchval(
            "INSERT INTO llm_tasks (user_id, session_id, kind, flush_index)"
            " SELECT user_id, session_id, 'summary', $3 FROM sessions"
            " WHERE user_id=$1 AND session_id=$2"
            " ON CONFLICT (user_id, session_id, kind, flush_index) DO UPDATE"
            " SET status='pending', not_before=now(), attempts=0, last_error=NULL,"
            " updated_at=now()"
            " RETURNING 1",
            user_id,
            session_id,
            SUMMARY_INDEX,
        )
        return row is not None

    @staticmethod
    async def claim(
        conn: Executor, limit: int, lease_s: float, kinds: Sequence[str] = ("extract", "summary")
    ) -> list[LLMTask]:
        """Lease up to `limit` ready tasks, oldest first, extractions before summaries.

        A summary is ready only once its session has no extraction and no flush outstanding,
        so it sees every fact of the session.
        """
        rows = await conn.fetch(
            "WITH ready AS ("
            "  SELECT user_id, session_id, kind, flush_index FROM llm_tasks t"
            "  WHERE status='pending' AND not_before <= now() AND kind = ANY($3::text[])"
            "  AND (leased_until IS NULL OR leased_until < now())"
            "  AND (kind = 'extract' OR ("
            "    NOT EXISTS (SELECT 1 FROM llm_tasks e WHERE e.user_id=t.user_id"
            "      AND e.session_id=t.session_id AND e.kind='extract' AND e.status='pending')"
            "    AND NOT EXISTS (SELECT 1 FROM flush_requests f WHERE f.user_id=t.user_id"
            "      AND f.session_id=t.session_id)"
            "    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.user_id=t.user_id"
            "      AND m.session_id=t.session_id AND m.status='pending')))"
            "  ORDER BY kind = 'summary', created_at"
            "  LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " UPDATE llm_tasks t SET lease_token = gen_random_uuid(),"
            " leased_until = now() + make_interval(secs => $2), attempts = t.attempts + 1,"
            " updated_at = now()"
            " FROM ready WHERE t.user_id=ready.user_id AND t.session_id=ready.session_id"
            " AND t.kind=ready.kind AND t.flush_index=ready.flush_index"
            " RETURNING t.*",
            limit,
            float(lease_s),
            list(kinds),
        )
        return sorted((_task(r) for r in rows), key=lambda t: (t.kind == "summary", t.key))

    @staticmethod
    async def hold(conn: asyncpg.Connection, task: LLMTask) -> bool:
        """Lock the task row inside the caller's transaction if the lease is still ours (not
        erased, not taken over by another worker after the lease ran out)."""
        return bool(
            await conn.fetchval(
                f"SELECT 1 FROM llm_tasks WHERE {_KEY} AND lease_token=$5 FOR UPDATE",
                *task.key,
                task.lease_token,
            )
        )

    @staticmethod
    async def delete(conn: asyncpg.Connection, task: LLMTask) -> None:
        await conn.execute(f"DELETE FROM llm_tasks WHERE {_KEY}", *task.key)

    @staticmethod
    async def postpone(conn: Executor, task: LLMTask, delay_s: float, error: str) -> bool:
        """Back to pending from `delay_s` on (the LLM could not be reached)."""
        status = await conn.execute(
            "UPDATE llm_tasks SET not_before = now() + make_interval(secs => $6),"
            " last_error=$7, lease_token=NULL, leased_until=NULL, updated_at=now()"
            f" WHERE {_KEY} AND lease_token=$5",
            *task.key,
            task.lease_token,
            float(delay_s),
            error[:2000],
        )
        return status.endswith(" 1")

    @staticmethod
    async def fail(conn: asyncpg.Connection, task: LLMTask, error: str) -> None:
        """Failed for good until a retry is requested; its messages are kept, marked failed."""
        await conn.execute(
            "UPDATE llm_tasks SET status='failed', last_error=$5, lease_token=NULL,"
            f" leased_until=NULL, updated_at=now() WHERE {_KEY}",
            *task.key,
            error[:2000],
        )
        if task.message_ids:
            await conn.execute(
                "UPDATE messages SET status='failed', last_error=$4"
                " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])"
                " AND status='buffered'",
                task.user_id,
                task.session_id,
                list(task.message_ids),
                error[:2000],
            )

    @staticmethod
    async def retry_failed(pool: asyncpg.Pool, user_id: str, session_id: str) -> dict | None:
        """Put the session's failed LLM tasks back in the queue; None for an unknown session."""
        async with pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT 1 FROM sessions WHERE user_id=$1 AND session_id=$2 FOR UPDATE",
                user_id,
                session_id,
            )
            if not exists:
                return None
            rows = await conn.fetch(
                "UPDATE llm_tasks SET status='pending', not_before=now(), attempts=0,"
                " last_error=NULL, updated_at=now()"
                " WHERE user_id=$1 AND session_id=$2 AND status='failed'"
                " RETURNING kind, message_ids",
                user_id,
                session_id,
            )
            ids = [m for r in rows for m in r["message_ids"]]
            status = await conn.execute(
                "UPDATE messages SET status='buffered', last_error=NULL"
                " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])"
                " AND status='failed'",
                user_id,
                session_id,
                ids,
            )
        return {"tasks": len(rows), "messages": int(status.rsplit(" ", 1)[1])}

    # --- reads for the task's work -------------------------------------------------------

    @staticmethod
    async def source_messages(
        conn: Executor, user_id: str, session_id: str, ids: Sequence[str]
    ) -> list[SourceRow]:
        rows = await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS}, compressed FROM messages"
            " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[]) ORDER BY seq",
            user_id,
            session_id,
            list(ids),
        )
        return [SourceRow(message_from_row(r), r["compressed"]) for r in rows]

    @staticmethod
    async def session_notes(conn: Executor, user_id: str, session_id: str) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT ts, text, kind, importance FROM memory_entries"
            " WHERE user_id=$1 AND session_id=$2 AND kind IN ('fact', 'summary')"
            f" AND version = {ACTIVE_VERSION}"
            " ORDER BY ts, kind, id",
            user_id,
            session_id,
        )

    @staticmethod
    async def participants(conn: Executor, user_id: str, session_id: str) -> list[str]:
        rows = await conn.fetch(
            "SELECT coalesce(name, role) AS who, min(seq) AS first FROM messages"
            " WHERE user_id=$1 AND session_id=$2 GROUP BY 1 ORDER BY 2",
            user_id,
            session_id,
        )
        return [r["who"] for r in rows]

    # --- results and accounting ----------------------------------------------------------

    @staticmethod
    async def store_summary(
        conn: asyncpg.Connection, user_id: str, session_id: str, text: str, data: dict
    ) -> None:
        await conn.execute(
            "UPDATE sessions SET summary=$3, summary_json=$4, summary_at=now(), updated_at=now()"
            " WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
            text,
            data,
        )

    @staticmethod
    async def add_usage(conn: Executor, user_id: str, session_id: str, usage: LLMUsage) -> None:
        """Add one operation's usage to the session's counters and the per-backend table."""
        if not usage.by_model:
            return
        await conn.execute(
            "UPDATE sessions SET llm_input_tokens = llm_input_tokens + $3,"
            " llm_output_tokens = llm_output_tokens + $4, llm_calls = llm_calls + $5,"
            " updated_at = now() WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.calls,
        )
        columns = [
            "calls",
            "ok",
            "transient_errors",
            "timeouts",
            "backend_down",
            "rejected",
            "parse_failures",
            "repair_calls",
            "prompt_tokens",
            "completion_tokens",
        ]
        placeholders = ", ".join(f"${i}" for i in range(3, 3 + len(columns)))
        updates = ", ".join(f"{c} = llm_usage.{c} + EXCLUDED.{c}" for c in columns)
        await conn.executemany(
            f"INSERT INTO llm_usage (backend, model, {', '.join(columns)})"
            f" VALUES ($1, $2, {placeholders})"
            f" ON CONFLICT (backend, model) DO UPDATE SET {updates}, updated_at = now()",
            [(r["backend"], r["model"], *(r[c] for c in columns)) for r in usage.rows()],
        )

    # --- status --------------------------------------------------------------------------

    @staticmethod
    async def session_status(conn: Executor, user_id: str, session_id: str) -> dict:
        """LLM work of one session: waiting tasks, failures with their errors, the summary's."""
        rows = await conn.fetch(
            "SELECT kind, flush_index, status, attempts, last_error, not_before,"
            " cardinality(message_ids) AS messages FROM llm_tasks"
            " WHERE user_id=$1 AND session_id=$2 ORDER BY kind, flush_index",
            user_id,
            session_id,
        )
        waiting = [r for r in rows if r["status"] == "pending"]
        next_at: datetime | None = min((r["not_before"] for r in waiting), default=None)
        summary_at = await conn.fetchval(
            "SELECT summary_at FROM sessions WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
        )
        return {
            "waiting_tasks": len(waiting),
            "waiting_messages": sum(r["messages"] for r in waiting),
            "next_attempt_at": next_at.isoformat() if next_at else None,
            "last_error": next((r["last_error"] for r in waiting if r["last_error"]), None),
            "failed": [
                {
                    "kind": r["kind"],
                    "flush_index": r["flush_index"],
                    "messages": r["messages"],
                    "attempts": r["attempts"],
                    "error": r["last_error"],
                }
                for r in rows
                if r["status"] == "failed"
            ],
            "summary_pending": any(r["kind"] == "summary" for r in waiting),
            "summary_at": summary_at.isoformat() if summary_at else None,
        }

    @staticmethod
    async def usage_totals(conn: Executor) -> list[dict]:
        rows = await conn.fetch("SELECT * FROM llm_usage ORDER BY backend, model")
        return [{k: v for k, v in dict(r).items() if k != "updated_at"} for r in rows]
