"""Consolidation's queue and a group's changes against a throwaway database."""

import uuid

from serve_app.maintenance.consolidation import GroupPlan, Tombstone
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
