"""Re-extraction's PostgreSQL side: which sessions a memory version still lacks, their stored
messages, and a session's entries of the version written in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from serve_app.model.entries import EntryRow
from serve_app.model.messages import StoredMessage
from serve_app.storage.locks import lock_user_sync
from serve_app.storage.maintenance_repo import add_llm_usage, bump_index_revision, insert_entries
from serve_app.storage.postgres import MESSAGE_COLUMNS, add_version_sql, message_from_row


class GenerationGone(RuntimeError):
    """The generation being built was activated, abandoned or retired by someone else."""


def sessions_behind(version: int) -> tuple[str, tuple]:
    """Query (for read_sql) of the sessions with done messages the version lacks."""
    return (
        "SELECT user_id, session_id FROM messages WHERE status='done'"
        " AND NOT (%s = ANY(versions)) GROUP BY user_id, session_id"
        " ORDER BY user_id, session_id",
        (version,),
    )


def count_sessions_behind(conn: psycopg.Connection, version: int) -> int:
    return conn.execute(
        "SELECT count(DISTINCT (user_id, session_id)) AS n FROM messages"
        " WHERE status='done' AND NOT (%s = ANY(versions))",
        (version,),
    ).fetchone()["n"]


def count_sessions(conn: psycopg.Connection) -> int:
    """Sessions with at least one done message (what a memory version covers)."""
    return conn.execute(
        "SELECT count(DISTINCT (user_id, session_id)) AS n FROM messages WHERE status='done'"
    ).fetchone()["n"]


def done_messages(
    conn: psycopg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[StoredMessage]]:
    """The done messages of each (user, session), in order."""
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE (user_id, session_id) IN"
        " (SELECT * FROM unnest(%s::text[], %s::text[])) AND status='done'"
        " ORDER BY user_id, session_id, seq",
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    out: dict[tuple[str, str], list[StoredMessage]] = {}
    for r in rows:
        out.setdefault((r["user_id"], r["session_id"]), []).append(message_from_row(r))
    return out


def begin_session_rewrite(
    conn: psycopg.Connection, generation: int, version: int, user_id: str, session_id: str
) -> set[str] | None:
    """First step of a session's rewrite (inside the caller's transaction): take the user's
    lock, check the generation is still building (GenerationGone if not) and delete what an
    earlier try wrote of the session in the version; its entry ids, or None if the session was
    erased meanwhile."""
    lock_user_sync(conn, user_id)
    status = conn.execute(
        "SELECT status FROM vector_generations WHERE generation=%s FOR SHARE", (generation,)
    ).fetchone()
    if status is None or status["status"] != "building":
        raise GenerationGone(f"generation {generation} is no longer building")
    exists = conn.execute(
        "SELECT 1 FROM sessions WHERE user_id=%s AND session_id=%s", (user_id, session_id)
    ).fetchone()
    if exists is None:
        return None
    return {
        r["id"]
        for r in conn.execute(
            "DELETE FROM memory_entries WHERE user_id=%s AND session_id=%s AND version=%s"
            " RETURNING id::text AS id",
            (user_id, session_id, version),
        ).fetchall()
    }


def insert_generation_entries(
    conn: psycopg.Connection, generation: int, rows: Sequence[EntryRow]
) -> None:
    """The entries, recorded as indexed by the generation."""
    insert_entries(conn, rows)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO generation_members (generation, entry_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            [(generation, r.id) for r in rows],
        )


def finish_session_rewrite(
    conn: psycopg.Connection,
    version: int,
    user_id: str,
    session_id: str,
    message_ids: Sequence[str],
    usage,
) -> None:
    """Last step: the session's messages recorded as done in the version, the LLM usage added
    and the user's index version bumped (cached searches of the user are stale)."""
    conn.execute(
        f"UPDATE messages SET versions = {add_version_sql('%s::int')}"
        " WHERE user_id=%s AND session_id=%s AND message_id = ANY(%s) AND status='done'",
        (version, version, user_id, session_id, list(message_ids)),
    )
    add_llm_usage(conn, usage)
    bump_index_revision(conn, user_id)
