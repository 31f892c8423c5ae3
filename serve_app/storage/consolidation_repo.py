"""Consolidation's PostgreSQL side: the group queue (`consolidation_groups`), decisions,
outcomes, and a group's changes to the memories (tombstones, revisions, merged text)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.types.json import Jsonb

from serve_app.maintenance.consolidation import GroupDecision, GroupPlan


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


def undecided_groups(conn: psycopg.Connection, job_id: str, anchors: Sequence[str]) -> list[dict]:
    """The job's groups of these anchors still without a decision: anchor, user, candidates."""
    return conn.execute(
        "SELECT anchor_id::text AS anchor_id, user_id, candidates FROM consolidation_groups"
        " WHERE job_id=%s AND anchor_id = ANY(%s::uuid[]) AND decision IS NULL",
        (job_id, list(anchors)),
    ).fetchall()


def undecided_anchors(job_id: str) -> tuple[str, tuple]:
    """Query (for read_sql) of the anchors a stopped run queued but did not decide."""
    return (
        "SELECT anchor_id::text AS anchor_id FROM consolidation_groups"
        " WHERE job_id=%s AND decision IS NULL ORDER BY anchor_id",
        (job_id,),
    )


def users_to_apply(job_id: str) -> tuple[str, tuple]:
    """Query (for read_sql) of the users with decided groups not applied yet."""
    return (
        "SELECT DISTINCT user_id FROM consolidation_groups WHERE job_id=%s"
        " AND decision IS NOT NULL AND outcome IS NULL ORDER BY user_id",
        (job_id,),
    )


def count_groups(
    conn: psycopg.Connection, job_id: str, *, decided: bool | None = None, closed: bool = False
) -> int:
    """The job's groups: all, decided (True) or undecided (False); `closed`: with an outcome."""
    where = {None: "", True: " AND decision IS NOT NULL", False: " AND decision IS NULL"}[decided]
    if closed:
        where += " AND outcome IS NOT NULL"
    return conn.execute(
        "SELECT count(*) AS n FROM consolidation_groups WHERE job_id=%s" + where, (job_id,)
    ).fetchone()["n"]


def save_decisions(
    conn: psycopg.Connection, job_id: str, decisions: Sequence[GroupDecision]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE consolidation_groups SET decision=%s WHERE job_id=%s AND anchor_id=%s",
            [(Jsonb(d.to_json()), job_id, d.anchor_id) for d in decisions],
        )


def decided_groups(
    conn: psycopg.Connection, job_id: str, user_id: str
) -> list[tuple[str, GroupDecision]]:
    """A user's decided, unapplied groups, oldest anchor first (the order they are applied)."""
    rows = conn.execute(
        "SELECT g.anchor_id::text AS anchor_id, g.decision FROM consolidation_groups g"
        " LEFT JOIN memory_entries e ON e.id = g.anchor_id"
        " WHERE g.job_id=%s AND g.user_id=%s AND g.decision IS NOT NULL"
        " AND g.outcome IS NULL"
        " ORDER BY e.ts NULLS LAST, e.session_id, e.source_message_ids, g.anchor_id",
        (job_id, user_id),
    ).fetchall()
    return [(g["anchor_id"], GroupDecision.from_json(g["decision"])) for g in rows]


def set_outcomes(
    conn: psycopg.Connection, job_id: str, anchor_ids: Sequence[str], outcome: str
) -> None:
    conn.execute(
        "UPDATE consolidation_groups SET outcome=%s WHERE job_id=%s"
        " AND anchor_id = ANY(%s::uuid[])",
        (outcome, job_id, list(anchor_ids)),
    )


def set_outcome(conn: psycopg.Connection, job_id: str, anchor_id: str, outcome: str) -> None:
    conn.execute(
        "UPDATE consolidation_groups SET outcome=%s WHERE job_id=%s AND anchor_id=%s",
        (outcome, job_id, anchor_id),
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
