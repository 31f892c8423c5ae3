"""PostgreSQL queries of the LightMem pipeline: session buffers, flush requests, token totals.

Statuses of a message: pending (stored, not yet read by a worker) -> buffered (in the session's
buffer state) -> done (its memory entries exist); failed after too many attempts. The buffer
state row is locked for the whole worker transaction and saved in it, together with every
status change, so a crash or a second replica never loses or repeats a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from serve_app.model.messages import StoredMessage
from serve_app.storage.postgres import MESSAGE_COLUMNS, add_version_sql, message_from_row


@dataclass(frozen=True)
class ClaimedSession:
    user_id: str
    session_id: str
    state: dict  # SessionBuffers.to_json(), {} when the session has never been processed
    flush_upto: int | None  # an outstanding flush covers messages up to this seq


@dataclass(frozen=True)
class BufferedUpdate:
    """What intake learned about one message: its compressed form and token counts."""

    message_id: str
    compressed: str | None  # None when compression is off
    raw_tokens: int
    compressed_tokens: int


@dataclass(frozen=True)
class SessionCounters:
    """Increments of a session's intake counters in one transaction (the LLM's are added by
    LLMTasksRepo.add_usage)."""

    raw_tokens: int = 0
    compressed_tokens: int = 0
    segments: int = 0
    flushes: int = 0


class BuffersRepo:
    """Static queries on a caller's connection (inside its transaction) or on a pool."""

    @staticmethod
    async def claim_sessions(conn: asyncpg.Connection, limit: int) -> list[ClaimedSession]:
        """Lock up to `limit` sessions that have pending messages or an outstanding flush.

        Oldest work first; SKIP LOCKED hands sessions another replica holds to nobody else, so
        replicas share the work and each session's messages are handled in seq order.
        """
        rows = await conn.fetch(
            "WITH work AS ("
            "  SELECT user_id, session_id, min(received_at) AS since FROM messages"
            "  WHERE status = 'pending' GROUP BY user_id, session_id"
            "  UNION ALL"
            "  SELECT user_id, session_id, requested_at FROM flush_requests"
            ")"
            " SELECT b.user_id, b.session_id, b.state, f.upto_seq"
            " FROM session_buffers b"
            " JOIN (SELECT user_id, session_id, min(since) AS since FROM work"
            "       GROUP BY user_id, session_id) w USING (user_id, session_id)"
            " LEFT JOIN flush_requests f USING (user_id, session_id)"
            " ORDER BY w.since, b.user_id, b.session_id"
            " LIMIT $1 FOR UPDATE OF b SKIP LOCKED",
            limit,
        )
        return [
            ClaimedSession(r["user_id"], r["session_id"], r["state"] or {}, r["upto_seq"])
            for r in rows
        ]

    @staticmethod
    async def pending_messages(
        conn: asyncpg.Connection, user_id: str, session_id: str, limit: int
    ) -> list[StoredMessage]:
        rows = await conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages"
            " WHERE user_id=$1 AND session_id=$2 AND status = 'pending'"
            " ORDER BY seq LIMIT $3",
            user_id,
            session_id,
            limit,
        )
        return [message_from_row(r) for r in rows]

    @staticmethod
    async def mark_buffered(
        conn: asyncpg.Connection, user_id: str, session_id: str, updates: Sequence[BufferedUpdate]
    ) -> None:
        await conn.executemany(
            "UPDATE messages SET status='buffered', compressed=$4, raw_tokens=$5,"
            " compressed_tokens=$6, attempts=attempts+1"
            " WHERE user_id=$1 AND session_id=$2 AND message_id=$3 AND status='pending'",
            [
                (user_id, session_id, u.message_id, u.compressed, u.raw_tokens, u.compressed_tokens)
                for u in updates
            ],
        )

    @staticmethod
    async def mark_done(
        conn: asyncpg.Connection, user_id: str, session_id: str, ids: Sequence[str], version: int
    ) -> int:
        """Done: their entries now exist in memory version `version`. Returns how many of the
        buffered messages among `ids` this marked (one already done or failed is left)."""
        status = await conn.execute(
            "UPDATE messages SET status='done', processed_at=now(), last_error=NULL,"
            f" versions={add_version_sql('$4')}"
            " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])"
            " AND status='buffered'",
            user_id,
            session_id,
            list(ids),
            version,
        )
        return int(status.rsplit(" ", 1)[1])

    @staticmethod
    async def mark_failed(
        conn: asyncpg.Connection, user_id: str, session_id: str, ids: Sequence[str], error: str
    ) -> None:
        await conn.execute(
            "UPDATE messages SET status='failed', last_error=$4, attempts=attempts+1"
            " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])",
            user_id,
            session_id,
            list(ids),
            error[:2000],
        )

    @staticmethod
    async def record_attempt(
        conn: asyncpg.Connection | asyncpg.Pool,
        user_id: str,
        session_id: str,
        ids: Sequence[str],
        error: str,
        max_attempts: int,
    ) -> None:
        """A failed try at pending messages; past `max_attempts` they are marked failed."""
        await conn.execute(
            "UPDATE messages SET attempts = attempts + 1, last_error = $4,"
            " status = CASE WHEN attempts + 1 >= $5 THEN 'failed' ELSE status END"
            " WHERE user_id=$1 AND session_id=$2 AND message_id = ANY($3::text[])"
            " AND status = 'pending'",
            user_id,
            session_id,
            list(ids),
            error[:2000],
            max_attempts,
        )

    @staticmethod
    async def save_state(
        conn: asyncpg.Connection,
        user_id: str,
        session_id: str,
        state: dict,
        buffered_messages: int,
        buffered_tokens: int,
    ) -> None:
        await conn.execute(
            "UPDATE session_buffers SET state=$3, buffered_messages=$4, buffered_tokens=$5,"
            " updated_at=now() WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
            state,
            buffered_messages,
            buffered_tokens,
        )

    @staticmethod
    async def add_counters(
        conn: asyncpg.Connection, user_id: str, session_id: str, c: SessionCounters
    ) -> None:
        await conn.execute(
            "UPDATE sessions SET raw_tokens = raw_tokens + $3,"
            " compressed_tokens = compressed_tokens + $4,"
            " segments = segments + $5, flushes = flushes + $6,"
            " updated_at = now() WHERE user_id=$1 AND session_id=$2",
            user_id,
            session_id,
            c.raw_tokens,
            c.compressed_tokens,
            c.segments,
            c.flushes,
        )

    # --- flush requests ----------------------------------------------------------------------

    @staticmethod
    async def request_flush(
        conn: asyncpg.Connection | asyncpg.Pool,
        user_id: str,
        session_id: str,
        *,
        summarize: bool = False,
    ) -> int | None:
        """Ask for everything the session holds so far to become memories.

        `summarize`: the session ended (flush: true) or its summary was asked for; with an LLM
        the worker then also writes the session summary. Returns the last seq the flush covers
        (-1 for a session without messages), or None when the session does not exist. Durable:
        any worker replica honours it, after a restart too.
        """
        return await conn.fetchval(
            "INSERT INTO flush_requests (user_id, session_id, upto_seq, summarize)"
            " SELECT user_id, session_id, next_seq - 1, $3 FROM sessions"
            " WHERE user_id=$1 AND session_id=$2"
            " ON CONFLICT (user_id, session_id) DO UPDATE"
            " SET upto_seq = GREATEST(flush_requests.upto_seq, EXCLUDED.upto_seq),"
            " summarize = flush_requests.summarize OR EXCLUDED.summarize"
            " RETURNING upto_seq",
            user_id,
            session_id,
            summarize,
        )

    @staticmethod
    async def request_idle_flushes(
        conn: asyncpg.Connection | asyncpg.Pool, idle_s: float, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """Ask for a flush of every session whose buffers hold messages and that received no
        message for `idle_s` seconds (the database's clock against the stored `received_at`).

        A session that already has a request is left alone. Returns the sessions asked for.
        Idempotent across worker replicas: the request is one row per session.
        """
        rows = await conn.fetch(
            "INSERT INTO flush_requests (user_id, session_id, upto_seq)"
            " SELECT b.user_id, b.session_id, s.next_seq - 1"
            " FROM session_buffers b JOIN sessions s USING (user_id, session_id)"
            " WHERE b.buffered_messages > 0"
            " AND NOT EXISTS (SELECT 1 FROM flush_requests f"
            "   WHERE f.user_id = b.user_id AND f.session_id = b.session_id)"
            " AND NOT EXISTS (SELECT 1 FROM messages m"
            "   WHERE m.user_id = b.user_id AND m.session_id = b.session_id"
            "   AND m.received_at > clock_timestamp() - make_interval(secs => $1))"
            " ORDER BY b.updated_at LIMIT $2"
            " ON CONFLICT (user_id, session_id) DO NOTHING"
            " RETURNING user_id, session_id",
            float(idle_s),
            limit,
        )
        return [(r["user_id"], r["session_id"]) for r in rows]

    @staticmethod
    async def clear_flush(
        conn: asyncpg.Connection, user_id: str, session_id: str, upto_seq: int
    ) -> bool:
        """Delete a satisfied request; returns whether it asked for the session summary."""
        # A request that moved past `upto_seq` meanwhile stays for the next round.
        return bool(
            await conn.fetchval(
                "DELETE FROM flush_requests WHERE user_id=$1 AND session_id=$2"
                " AND upto_seq <= $3 RETURNING summarize",
                user_id,
                session_id,
                upto_seq,
            )
        )

    # --- reads -------------------------------------------------------------------------------

    @staticmethod
    async def session_pipeline(
        conn: asyncpg.Connection | asyncpg.Pool, user_id: str, session_id: str
    ) -> dict | None:
        """Buffer occupancy and pipeline counters of one session (None if unknown)."""
        r = await conn.fetchrow(
            "SELECT s.raw_tokens, s.compressed_tokens, s.llm_input_tokens, s.llm_output_tokens,"
            " s.llm_calls, s.segments, s.flushes,"
            " coalesce(b.buffered_messages, 0) AS buffered_messages,"
            " coalesce(b.buffered_tokens, 0) AS buffered_tokens,"
            " f.upto_seq AS flush_requested_upto"
            " FROM sessions s"
            " LEFT JOIN session_buffers b USING (user_id, session_id)"
            " LEFT JOIN flush_requests f USING (user_id, session_id)"
            " WHERE s.user_id=$1 AND s.session_id=$2",
            user_id,
            session_id,
        )
        if r is None:
            return None
        out = dict(r)
        out["compression_ratio"] = compression_ratio(out["raw_tokens"], out["compressed_tokens"])
        return out

    @staticmethod
    async def user_totals(conn: asyncpg.Connection | asyncpg.Pool, user_id: str) -> dict | None:
        r = await conn.fetchrow("SELECT * FROM user_token_totals WHERE user_id=$1", user_id)
        if r is None:
            return None
        out = dict(r)
        out["compression_ratio"] = compression_ratio(out["raw_tokens"], out["compressed_tokens"])
        return out


def compression_ratio(raw_tokens: int, compressed_tokens: int) -> float | None:
    """Tokens after compression per raw token (1.0 with compression off); None before any."""
    return round(compressed_tokens / raw_tokens, 4) if raw_tokens else None
