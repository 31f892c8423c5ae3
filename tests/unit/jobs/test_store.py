"""The jobs' PostgreSQL side against a throwaway database on the machine's server."""

import uuid
from datetime import UTC, datetime

import pytest

from serve_app.jobs import store
from serve_app.jobs.consolidation import GroupPlan, Tombstone
from serve_app.jobs.linking import make_link
from serve_app.model.entries import EntryRow, entry_id
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database

T0 = datetime(2023, 5, 1, tzinfo=UTC)


@pytest.fixture
async def dsn():
    dsn = await create_database()
    pool = await create_pool(dsn, 1, 2)
    await migrate(pool)
    repo = Repository(pool)
    await pool.execute("INSERT INTO users (user_id) VALUES ('u')")
    await pool.execute("INSERT INTO sessions (user_id, session_id) VALUES ('u', 's')")
    async with pool.acquire() as conn:
        await repo.insert_entries(
            conn,
            [
                EntryRow(entry_id("u", "s", "message", [m]), "u", "s", "message", f"text {m}",
                         f"text {m}", T0, "Monday", "Ann", [m], None, {}, None, "minilm")
                for m in ("m1", "m2", "m3")
            ],
        )  # fmt: skip
    await pool.close()
    yield dsn
    await drop_database(dsn)


def _ids():
    return [entry_id("u", "s", "message", [m]) for m in ("m1", "m2", "m3")]


def test_apply_plan_tombstones_revises_and_erasure_removes_all(dsn):
    a, b, n = _ids()
    conn = store.connect(dsn)
    job = str(uuid.uuid4())
    store.ensure_job(conn, job, "consolidate", "u", {})
    plan = GroupPlan(
        anchor_id=n,
        new_text="merged",
        new_source_ids=("m1", "m3"),
        tombstones=(Tombstone(a, "merged", "dup"), Tombstone(b, "contradicted", "newer wins")),
        merged_ids=(a,),
    )
    with conn.transaction():
        store.apply_plan(conn, job, "u", plan)
    entries = store.load_entries(conn, "u", [a, b, n])
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
    summary = store.consolidation_summary(conn, job)
    assert (summary["merged"], summary["deleted"], summary["rewritten"]) == (1, 1, 1)

    store.save_links(conn, job, "u", [make_link(n, a, "gone entry", 0.9)])  # a is gone
    assert conn.execute("SELECT count(*) AS c FROM memory_links").fetchone()["c"] == 0
    conn.execute("DELETE FROM users WHERE user_id='u'")
    for table in ("memory_tombstones", "memory_revisions", "memory_entries"):
        assert conn.execute(f"SELECT count(*) AS c FROM {table}").fetchone()["c"] == 0
    conn.close()


def test_done_items_and_job_lifecycle_are_idempotent(dsn):
    conn = store.connect(dsn)
    job = str(uuid.uuid4())
    row = store.ensure_job(conn, job, "link", None, {"top_k": 3})
    assert row["status"] == "pending" and store.ensure_job(conn, job, "link", None, {})["id"] == job
    with pytest.raises(ValueError):
        store.ensure_job(conn, job, "reembed", None, {})
    store.mark_done(conn, job, "link", ["x", "y"])
    store.mark_done(conn, job, "link", ["y", "z"])
    assert store.count_done(conn, job, "link") == 3
    store.start_job(conn, job, "sub-1")
    store.fail_job(conn, job, "SystemExit: 15", "stopped")
    store.start_job(conn, job, None)
    store.finish_job(conn, job, {"links": 2})
    row = conn.execute("SELECT * FROM jobs WHERE id=%s", (job,)).fetchone()
    assert (row["status"], row["attempts"], row["submission_id"], row["error"]) == (
        "succeeded", 2, "sub-1", None,
    )  # fmt: skip
    conn.close()


def test_job_writes_entries_of_a_version_and_counts_only_the_active_one(dsn):
    import dataclasses

    from serve_app.llm.accounting import LLMUsage
    from serve_app.llm.base import LLMReply

    conn = store.connect(dsn)
    [a, *_] = _ids()
    row = store.vector_row(conn, a)
    assert row["version"] == 1
    v2 = EntryRow(entry_id("u", "s", "fact", ["flush:0", "0"], 2), "u", "s", "fact", "Ann ran.",
                  "Ann ran.", T0, "Monday", "Ann", ["m1"], "s/0", {"k": [1]}, 0.5, "minilm", 2)
    store.insert_entries(conn, [v2, dataclasses.replace(v2, text="ignored")])  # fmt: skip
    got = conn.execute("SELECT text, version, metadata FROM memory_entries WHERE version=2")
    assert [tuple(r.values()) for r in got.fetchall()] == [("Ann ran.", 2, {"k": [1]})]
    assert store.count_entries(conn, "u") == 3 == store.count_entries(conn, None)
    assert store.count_entries(conn, None, 2) == 1
    assert set(store.load_entries(conn, "u", [v2.id, a])) == {a}  # only the active version
    conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version) VALUES (0, 'm', 3, 'c', 'active', 2)"
    )
    assert store.count_entries(conn, "u") == 1
    assert set(store.load_entries(conn, "u", [v2.id, a])) == {v2.id}

    usage = LLMUsage()
    usage.record_reply(LLMReply("{}", 100, 20, "ep", "m"))
    store.add_llm_usage(conn, usage)
    store.add_llm_usage(conn, usage)
    store.add_llm_usage(conn, LLMUsage())
    r = conn.execute("SELECT calls, prompt_tokens, completion_tokens FROM llm_usage").fetchone()
    assert (r["calls"], r["prompt_tokens"], r["completion_tokens"]) == (2, 200, 40)
    conn.close()
