"""PostgreSQL side of the jobs: the `jobs` table, per-stage done-items, the consolidation queue,
tombstones, revisions and links. Job drivers and their Ray Data workers are synchronous code,
so they use psycopg; the Ingress reads and creates job rows through its asyncpg pool."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence

import asyncpg
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from serve_app.jobs.consolidation import Entry, GroupDecision, GroupPlan
from serve_app.jobs.linking import Link
from serve_app.llm.accounting import LLMUsage
from serve_app.storage.postgres import ACTIVE_VERSION, EntryRow

JOB_COLUMNS = (
    "id::text AS id, kind, user_id, params, state, status, stage, total, done, rate_per_s,"
    " eta_s, result, error, submission_id, attempts, created_at, started_at, updated_at,"
    " finished_at"
)


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, row_factory=dict_row, autocommit=True)


# --- jobs (async, for the Ingress) ---------------------------------------------------------------


async def create_job_async(pool: asyncpg.Pool, kind: str, user_id: str | None, params: dict) -> str:
    job_id = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO jobs (id, kind, user_id, params) VALUES ($1, $2, $3, $4)",
        uuid.UUID(job_id),
        kind,
        user_id,
        params,
    )
    return job_id


async def set_submission_async(pool: asyncpg.Pool, job_id: str, submission_id: str) -> None:
    await pool.execute(
        "UPDATE jobs SET submission_id=$2, updated_at=now() WHERE id=$1",
        uuid.UUID(job_id),
        submission_id,
    )


async def fail_job_async(pool: asyncpg.Pool, job_id: str, error: str) -> None:
    await pool.execute(
        "UPDATE jobs SET status='failed', error=$2, updated_at=now(), finished_at=now()"
        " WHERE id=$1",
        uuid.UUID(job_id),
        error[:2000],
    )


async def get_job_async(pool: asyncpg.Pool, job_id: str) -> dict | None:
    r = await pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=$1", uuid.UUID(job_id))
    return dict(r) if r else None


# --- jobs (sync, for drivers) --------------------------------------------------------------------


def ensure_job(
    conn: psycopg.Connection, job_id: str, kind: str, user_id: str | None, params: dict
) -> dict:
    """The job's row, created if this run was started by hand (`ray job submit`)."""
    conn.execute(
        "INSERT INTO jobs (id, kind, user_id, params) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (job_id, kind, user_id, Jsonb(params)),
    )
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
    if row["kind"] != kind:
        raise ValueError(f"job {job_id} is a {row['kind']!r} job, not {kind!r}")
    return row


def start_job(conn: psycopg.Connection, job_id: str, submission_id: str | None) -> None:
    conn.execute(
        "UPDATE jobs SET status='running', attempts=attempts+1, error=NULL, finished_at=NULL,"
        " started_at=COALESCE(started_at, now()), updated_at=now(),"
        " submission_id=COALESCE(%s, submission_id) WHERE id=%s",
        (submission_id, job_id),
    )


def merge_state(conn: psycopg.Connection, job_id: str, state: dict) -> None:
    conn.execute(
        "UPDATE jobs SET state = state || %s, updated_at=now() WHERE id=%s",
        (Jsonb(state), job_id),
    )


def report_progress(
    conn: psycopg.Connection,
    job_id: str,
    stage: str,
    total: int,
    done: int,
    rate: float | None,
    eta: float | None,
) -> None:
    conn.execute(
        "UPDATE jobs SET stage=%s, total=%s, done=%s, rate_per_s=%s, eta_s=%s, updated_at=now()"
        " WHERE id=%s",
        (stage, total, done, rate, eta, job_id),
    )


def finish_job(conn: psycopg.Connection, job_id: str, result: dict) -> None:
    conn.execute(
        "UPDATE jobs SET status='succeeded', result=%s, eta_s=0, updated_at=now(),"
        " finished_at=now() WHERE id=%s",
        (Jsonb(result), job_id),
    )


def fail_job(conn: psycopg.Connection, job_id: str, error: str, status: str = "failed") -> None:
    conn.execute(
        "UPDATE jobs SET status=%s, error=%s, updated_at=now(), finished_at=now() WHERE id=%s",
        (status, error[:2000], job_id),
    )


def count_done(conn: psycopg.Connection, job_id: str, stage: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM job_items WHERE job_id=%s AND stage=%s", (job_id, stage)
    ).fetchone()["n"]


def mark_done(conn: psycopg.Connection, job_id: str, stage: str, items: Iterable[str]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO job_items (job_id, stage, item_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            [(job_id, stage, i) for i in items],
        )


# --- entries ------------------------------------------------------------------------------------


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


def lock_user_shared(conn: psycopg.Connection, user_id: str) -> None:
    # Same key as Repository.lock_users_shared: erasing a user waits for this transaction.
    conn.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 7))", (user_id,))


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


# --- consolidation ------------------------------------------------------------------------------


def save_groups(
    conn: psycopg.Connection, job_id: str, user_id: str, groups: Sequence[tuple[str, list]]
) -> None:
    """Queue rows: (anchor id, [(candidate id, score)])."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO consolidation_groups (job_id, user_id, anchor_id, candidates)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (job_id, user_id, a, Jsonb([{"id": c, "score": s} for c, s in cands]))
                for a, cands in groups
            ],
        )


def save_decisions(
    conn: psycopg.Connection, job_id: str, decisions: Sequence[GroupDecision]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE consolidation_groups SET decision=%s WHERE job_id=%s AND anchor_id=%s",
            [(Jsonb(d.to_json()), job_id, d.anchor_id) for d in decisions],
        )


def apply_plan(conn: psycopg.Connection, job_id: str, user_id: str, plan: GroupPlan) -> None:
    """The PostgreSQL half of a group's changes (inside the caller's transaction)."""
    gone = [t.entry_id for t in plan.tombstones]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memory_tombstones (id, user_id, entry, action, reason, superseded_by,"
            " job_id) SELECT e.id, e.user_id, to_jsonb(e), %s, %s, %s, %s FROM memory_entries e"
            " WHERE e.id=%s AND e.user_id=%s ON CONFLICT (id) DO NOTHING",
            [
                (t.action, t.reason, plan.anchor_id, job_id, t.entry_id, user_id)
                for t in plan.tombstones
            ],
        )
    conn.execute(
        "DELETE FROM memory_entries WHERE user_id=%s AND id = ANY(%s::uuid[])", (user_id, gone)
    )
    if plan.new_text is not None or plan.new_source_ids is not None:
        conn.execute(
            "INSERT INTO memory_revisions (entry_id, user_id, old_text, new_text, old_source_ids,"
            " merged_ids, job_id) SELECT id, user_id, text, COALESCE(%s, text),"
            " source_message_ids, %s::uuid[], %s FROM memory_entries WHERE id=%s",
            (plan.new_text, list(plan.merged_ids), job_id, plan.anchor_id),
        )
        conn.execute(
            "UPDATE memory_entries SET text=COALESCE(%s, text),"
            " index_text=COALESCE(%s, index_text),"
            " source_message_ids=COALESCE(%s, source_message_ids), updated_at=now(),"
            " metadata = metadata || %s WHERE id=%s",
            (
                plan.new_text,
                plan.new_text,
                list(plan.new_source_ids) if plan.new_source_ids is not None else None,
                Jsonb({"consolidated_by": job_id, "merged": list(plan.merged_ids)}),
                plan.anchor_id,
            ),
        )
    if plan.new_text is not None:
        # Generations of another model embed it again from the new text (router's sweep).
        conn.execute("DELETE FROM generation_members WHERE entry_id=%s", (plan.anchor_id,))


def vector_row(conn: psycopg.Connection, entry_id: str) -> dict:
    r = conn.execute(
        "SELECT id::text AS id, index_text, session_id, ts, speaker, version FROM memory_entries"
        " WHERE id=%s",
        (entry_id,),
    ).fetchone()
    return dict(r)


def set_outcome(conn: psycopg.Connection, job_id: str, anchor_id: str, outcome: str) -> None:
    conn.execute(
        "UPDATE consolidation_groups SET outcome=%s WHERE job_id=%s AND anchor_id=%s",
        (outcome, job_id, anchor_id),
    )


def consolidation_summary(conn: psycopg.Connection, job_id: str) -> dict:
    outcomes = {
        r["outcome"] or "pending": r["n"]
        for r in conn.execute(
            "SELECT outcome, count(*) AS n FROM consolidation_groups WHERE job_id=%s"
            " GROUP BY outcome",
            (job_id,),
        ).fetchall()
    }
    tomb = {
        r["action"]: r["n"]
        for r in conn.execute(
            "SELECT action, count(*) AS n FROM memory_tombstones WHERE job_id=%s GROUP BY action",
            (job_id,),
        ).fetchall()
    }
    revised = conn.execute(
        "SELECT count(*) AS n FROM memory_revisions WHERE job_id=%s AND old_text <> new_text",
        (job_id,),
    ).fetchone()["n"]
    return {
        "groups": sum(outcomes.values()),
        "outcomes": outcomes,
        "merged": tomb.get("merged", 0),
        "deleted": tomb.get("contradicted", 0),
        "rewritten": revised,
    }


# --- links --------------------------------------------------------------------------------------


def save_links(conn: psycopg.Connection, job_id: str, user_id: str, links: Sequence[Link]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memory_links (user_id, src, dst, reason, score, job_id)"
            " SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM memory_entries"
            " WHERE id=%s) AND EXISTS (SELECT 1 FROM memory_entries WHERE id=%s)"
            " ON CONFLICT (src, dst) DO UPDATE SET reason=EXCLUDED.reason, score=EXCLUDED.score,"
            " job_id=EXCLUDED.job_id",
            [
                (user_id, lk.src, lk.dst, lk.reason, lk.score, job_id, lk.src, lk.dst)
                for lk in links
            ],
        )


async def linked_memories(
    pool: asyncpg.Pool, user_id: str, ids: Sequence[str], per_hit: int
) -> dict[str, list[dict]]:
    """For each id, its linked memories (strongest first): {id, text, reason, score}."""
    rows = await pool.fetch(
        "SELECT hit::text AS hit, other::text AS other, reason, score FROM ("
        " SELECT src AS hit, dst AS other, reason, score FROM memory_links"
        "  WHERE user_id=$1 AND src = ANY($2::uuid[])"
        " UNION ALL"
        " SELECT dst, src, reason, score FROM memory_links"
        "  WHERE user_id=$1 AND dst = ANY($2::uuid[])) l ORDER BY hit, score DESC",
        user_id,
        [uuid.UUID(i) for i in ids],
    )
    out: dict[str, list[dict]] = {}
    for r in rows:
        lst = out.setdefault(r["hit"], [])
        if len(lst) < per_hit:
            lst.append({"id": r["other"], "reason": r["reason"], "link_score": r["score"]})
    return out


def dumps(obj) -> str:
    return json.dumps(obj, default=str)
