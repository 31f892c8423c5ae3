"""Entries as the jobs read and write them, against a throwaway database."""

import uuid

from serve_app.model.entries import EntryRow, entry_id
from serve_app.storage import jobs_repo, maintenance_repo
from tests.unit.storage.job_db import T0, entry_ids, seeded

dsn = seeded  # the seeded database, as the fixture `dsn`


def test_job_writes_entries_of_a_version_and_counts_only_the_active_one(dsn):
    import dataclasses

    from serve_app.llm.accounting import LLMUsage
    from serve_app.llm.base import LLMReply

    conn = jobs_repo.connect(dsn)
    [a, *_] = entry_ids()
    row = maintenance_repo.vector_row(conn, a)
    assert row["version"] == 1
    v2 = EntryRow(
        entry_id("u", "s", "fact", ["flush:0", "0"], 2),
        "u",
        "s",
        "fact",
        "Ann ran.",
        "Ann ran.",
        T0,
        "Monday",
        "Ann",
        ["m1"],
        "s/0",
        {"k": [1]},
        0.5,
        "minilm",
        2,
    )
    maintenance_repo.insert_entries(conn, [v2, dataclasses.replace(v2, text="ignored")])
    got = conn.execute("SELECT text, version, metadata FROM memory_entries WHERE version=2")
    assert [tuple(r.values()) for r in got.fetchall()] == [("Ann ran.", 2, {"k": [1]})]
    assert maintenance_repo.count_entries(conn, "u") == 3
    assert maintenance_repo.count_entries(conn, None) == 3
    assert maintenance_repo.count_entries(conn, None, 2) == 1
    # Only the active version.
    assert set(maintenance_repo.load_entries(conn, "u", [v2.id, a])) == {a}
    conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version) VALUES (0, 'm', 3, 'c', 'active', 2)"
    )
    assert maintenance_repo.count_entries(conn, "u") == 1
    assert set(maintenance_repo.load_entries(conn, "u", [v2.id, a])) == {v2.id}

    usage = LLMUsage()
    usage.record_reply(LLMReply("{}", 100, 20, "ep", "m"))
    maintenance_repo.add_llm_usage(conn, usage)
    maintenance_repo.add_llm_usage(conn, usage)
    maintenance_repo.add_llm_usage(conn, LLMUsage())
    r = conn.execute("SELECT calls, prompt_tokens, completion_tokens FROM llm_usage").fetchone()
    assert (r["calls"], r["prompt_tokens"], r["completion_tokens"]) == (2, 200, 40)
    conn.close()


def test_entries_to_visit_skip_what_the_stage_recorded_and_other_users(dsn):
    a, b, c = entry_ids()
    conn = jobs_repo.connect(dsn)
    job = str(uuid.uuid4())
    jobs_repo.ensure_job(conn, job, "link", None, {})
    jobs_repo.mark_done(conn, job, "link", [b])
    jobs_repo.mark_done(conn, job, "queue", [c])  # another stage's record
    for user in ("u", None):
        sql, params = maintenance_repo.entries_to_visit(job, "link", user)
        got = [r["id"] for r in conn.execute(sql, params).fetchall()]
        assert got == sorted([a, c]), user
    sql, params = maintenance_repo.entries_to_visit(job, "link", "nobody")
    assert conn.execute(sql, params).fetchall() == []
    conn.close()


def test_entries_missing_from_a_generation_and_its_version(dsn):
    a, b, c = entry_ids()
    conn = jobs_repo.connect(dsn)
    conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version) VALUES (3, 'm', 3, 'c', 'building', 1)"
    )
    conn.execute("INSERT INTO generation_members (generation, entry_id) VALUES (3, %s)", (b,))
    assert maintenance_repo.generation_memory_version(conn, 3) == 1
    sql, params = maintenance_repo.entries_missing_from_generation(1, 3)
    rows = conn.execute(sql, params).fetchall()
    assert [r["id"] for r in rows] == sorted([a, c])
    assert set(rows[0]) == {"id", "user_id", "session_id", "ts", "speaker", "index_text",
                            "updated_at"}  # fmt: skip
    conn.close()
