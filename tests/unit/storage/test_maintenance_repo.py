"""Entries as the jobs read and write them, against a throwaway database."""

from serve_app.storage import jobs_repo, maintenance_repo
from serve_app.storage.postgres import EntryRow, entry_id
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
