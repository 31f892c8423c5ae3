"""Consolidation's queue and a group's changes against a throwaway database."""

import uuid

from serve_app.maintenance.consolidation import GroupDecision, GroupPlan, Tombstone
from serve_app.maintenance.linking import make_link
from serve_app.storage import consolidation_repo, jobs_repo, links_repo, maintenance_repo
from tests.unit.storage.job_db import entry_ids, seeded

dsn = seeded  # the seeded database, as the fixture `dsn`


def test_apply_plan_tombstones_revises_and_erasure_removes_all(dsn):
    a, b, n = entry_ids()
    conn = jobs_repo.connect(dsn)
    job = str(uuid.uuid4())
    jobs_repo.ensure_job(conn, job, "consolidate", "u", {})
    plan = GroupPlan(
        anchor_id=n,
        new_text="merged",
        new_source_ids=("m1", "m3"),
        tombstones=(Tombstone(a, "merged", "dup"), Tombstone(b, "contradicted", "newer wins")),
        merged_ids=(a,),
    )
    with conn.transaction():
        consolidation_repo.apply_plan(conn, job, "u", plan)
    entries = maintenance_repo.load_entries(conn, "u", [a, b, n])
    assert list(entries) == [n]
    assert entries[n].text == "merged" and entries[n].source_message_ids == ("m1", "m3")
    tombs = conn.execute(
        "SELECT id::text AS id, action, superseded_by::text AS by, entry->>'text' AS text"
        " FROM memory_tombstones ORDER BY action"
    ).fetchall()
    assert [(t["id"], t["action"], t["by"], t["text"]) for t in tombs] == [
        (b, "contradicted", n, "text m2"),
        (a, "merged", n, "text m1"),
    ]
    rev = conn.execute("SELECT old_text, new_text FROM memory_revisions").fetchone()
    assert (rev["old_text"], rev["new_text"]) == ("text m3", "merged")
    summary = consolidation_repo.consolidation_summary(conn, job)
    assert (summary["merged"], summary["deleted"], summary["rewritten"]) == (1, 1, 1)

    links_repo.save_links(conn, job, "u", [make_link(n, a, "gone entry", 0.9)])  # a is gone
    assert conn.execute("SELECT count(*) AS c FROM memory_links").fetchone()["c"] == 0
    conn.execute("DELETE FROM users WHERE user_id='u'")
    for table in ("memory_tombstones", "memory_revisions", "memory_entries"):
        assert conn.execute(f"SELECT count(*) AS c FROM {table}").fetchone()["c"] == 0
    conn.close()


def test_the_group_queue_from_queued_to_applied(dsn):
    a, b, n = entry_ids()
    conn = jobs_repo.connect(dsn)
    job = str(uuid.uuid4())
    jobs_repo.ensure_job(conn, job, "consolidate", "u", {})
    consolidation_repo.save_groups(conn, job, "u", [(n, [(a, 0.9)]), (b, [(a, 0.8)])])
    consolidation_repo.save_groups(conn, job, "u", [(n, [(a, 0.1)])])  # queued once
    assert consolidation_repo.count_groups(conn, job) == 2
    assert consolidation_repo.count_groups(conn, job, decided=False) == 2
    undecided = consolidation_repo.undecided_groups(conn, job, [n, a])
    assert [(g["anchor_id"], g["candidates"]) for g in undecided] == [
        (n, [{"id": a, "score": 0.9}])
    ]
    sql, params = consolidation_repo.undecided_anchors(job)
    assert [r["anchor_id"] for r in conn.execute(sql, params).fetchall()] == sorted([n, b])

    keep = GroupDecision(n, (), None, "skipped: entries gone")
    consolidation_repo.save_decisions(conn, job, [keep, GroupDecision(b, (), None, "dedup")])
    assert consolidation_repo.count_groups(conn, job, decided=True) == 2
    sql, params = consolidation_repo.users_to_apply(job)
    assert conn.execute(sql, params).fetchall() == [{"user_id": "u"}]
    decided = consolidation_repo.decided_groups(conn, job, "u")
    assert [anchor for anchor, _ in decided] == [b, n]  # same ts and session: by sources
    assert decided[1][1] == keep
    consolidation_repo.set_outcomes(conn, job, [n], "unchanged")
    consolidation_repo.set_outcome(conn, job, b, "applied")
    assert consolidation_repo.count_groups(conn, job, closed=True) == 2
    assert consolidation_repo.decided_groups(conn, job, "u") == []
    assert conn.execute(sql, params).fetchall() == []
    summary = consolidation_repo.consolidation_summary(conn, job)
    assert summary["outcomes"] == {"unchanged": 1, "applied": 1}
    conn.close()
