"""Memory entries as the offline jobs read and write them (synchronous psycopg): counts, the
entries a stage still has to visit, locked loads, inserts and the per-backend LLM ledger."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.types.json import Jsonb

from serve_app.llm.accounting import LLMUsage
from serve_app.maintenance.consolidation import Entry
from serve_app.storage.postgres import ACTIVE_VERSION, EntryRow


def user_scope(user_id: str | None, column: str = "user_id") -> tuple[str, tuple]:
    """A WHERE fragment (and its parameters) for one user or everyone."""
    return (f"{column} = %s", (user_id,)) if user_id else ("TRUE", ())


def count_entries(conn: psycopg.Connection, user_id: str | None, version: int | None = None) -> int:
    """Entries of one user or everyone in memory version `version` (default: the active one)."""
    where, params = user_scope(user_id)
    return conn.execute(
        f"SELECT count(*) AS n FROM memory_entries WHERE {where}"
        f" AND version = COALESCE(%s, {ACTIVE_VERSION})",
        (*params, version),
    ).fetchone()["n"]


def entries_to_visit(job_id: str, stage: str, user_id: str | None) -> tuple[str, tuple]:
    """Query (for Ray Data's read_sql) of the active entries, `id` and `user_id`, that `stage`
    of the job has not recorded as done; ordered so a user's entries come together."""
    where, scope = user_scope(user_id, "e.user_id")
    return (
        f"SELECT e.id::text AS id, e.user_id FROM memory_entries e WHERE {where}"
        f" AND e.version = {ACTIVE_VERSION} AND NOT"
        " EXISTS (SELECT 1 FROM job_items j WHERE j.job_id=%s AND j.stage=%s"
        " AND j.item_id = e.id::text) ORDER BY e.user_id, e.id",
        (*scope, job_id, stage),
    )


def entries_missing_from_generation(version: int, generation: int) -> tuple[str, tuple]:
    """Query (for read_sql) of the entries of `version` the generation has not indexed yet."""
    return (
        "SELECT e.id::text AS id, e.user_id, e.session_id, e.ts, e.speaker, e.index_text,"
        " e.updated_at FROM memory_entries e WHERE e.version=%s AND NOT EXISTS (SELECT 1"
        " FROM generation_members m WHERE m.generation=%s AND m.entry_id=e.id)"
        " ORDER BY e.id",
        (version, generation),
    )


def generation_memory_version(conn: psycopg.Connection, generation: int) -> int:
    """The memory version a generation indexes (the one active when it was created)."""
    return conn.execute(
        "SELECT memory_version FROM vector_generations WHERE generation=%s", (generation,)
    ).fetchone()["memory_version"]


def _entry(r: dict) -> Entry:
    return Entry(
        id=str(r["id"]),
        text=r["text"],
        ts=r["ts"],
        session_id=r["session_id"],
        source_message_ids=tuple(r["source_message_ids"]),
    )


def load_entries(
    conn: psycopg.Connection, user_id: str, ids: Sequence[str], *, lock: bool = False
) -> dict[str, Entry]:
    if not ids:
        return {}
    # Only the active memory version: a job never acts on the memories of another version.
    rows = conn.execute(
        "SELECT id, text, ts, session_id, source_message_ids FROM memory_entries"
        f" WHERE user_id=%s AND id = ANY(%s::uuid[]) AND version = {ACTIVE_VERSION} ORDER BY id"
        + (" FOR UPDATE" if lock else ""),
        (user_id, list(ids)),
    ).fetchall()
    return {str(r["id"]): _entry(r) for r in rows}


def vector_row(conn: psycopg.Connection, entry_id: str) -> dict:
    """What the vector index stores of an entry (the router builds its point from it)."""
    r = conn.execute(
        "SELECT id::text AS id, index_text, session_id, ts, speaker, version FROM memory_entries"
        " WHERE id=%s",
        (entry_id,),
    ).fetchone()
    return dict(r)


def bump_index_revision(conn: psycopg.Connection, user_id: str) -> None:
    conn.execute(
        "UPDATE users SET index_revision = index_revision + 1 WHERE user_id=%s", (user_id,)
    )


def insert_entries(conn: psycopg.Connection, rows: Sequence[EntryRow]) -> None:
    """Repository.insert_entries for synchronous job code (same columns, same conflict rule)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memory_entries (id, user_id, session_id, kind, text, index_text, ts,"
            " weekday, speaker, source_message_ids, topic_id, metadata, importance,"
            " embedding_model, version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            [
                (
                    e.id, e.user_id, e.session_id, e.kind, e.text, e.index_text, e.ts,
                    e.weekday, e.speaker, list(e.source_message_ids), e.topic_id,
                    Jsonb(e.metadata), e.importance, e.embedding_model, e.version,
                )
                for e in rows
            ],
        )  # fmt: skip


_USAGE_COLUMNS = (
    "calls", "ok", "transient_errors", "timeouts", "backend_down", "rejected",
    "parse_failures", "repair_calls", "prompt_tokens", "completion_tokens",
)  # fmt: skip


def add_llm_usage(conn: psycopg.Connection, usage: LLMUsage) -> None:
    """A job's LLM calls and tokens, added to the per-backend ledger (`llm_usage`)."""
    rows = usage.rows()
    if not rows:
        return
    cols = ", ".join(_USAGE_COLUMNS)
    values = ", ".join(["%s"] * len(_USAGE_COLUMNS))
    updates = ", ".join(f"{c} = llm_usage.{c} + EXCLUDED.{c}" for c in _USAGE_COLUMNS)
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO llm_usage (backend, model, {cols}) VALUES (%s, %s, {values})"
            f" ON CONFLICT (backend, model) DO UPDATE SET {updates}, updated_at = now()",
            [(r["backend"], r["model"], *(r[c] for c in _USAGE_COLUMNS)) for r in rows],
        )
