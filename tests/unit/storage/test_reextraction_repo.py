"""Re-extraction's reads and a session's rewrite into a memory version, against a throwaway
database."""

import dataclasses

import pytest

from serve_app.llm.accounting import LLMUsage
from serve_app.model.entries import EntryRow, entry_id
from serve_app.storage import jobs_repo, maintenance_repo, reextraction_repo
from tests.unit.storage.job_db import T0, seeded

dsn = seeded  # the seeded database, as the fixture `dsn`


def _messages(conn) -> None:
    conn.execute(
        "INSERT INTO messages (user_id, session_id, message_id, seq, role, name, content, ts,"
        " ts_provided, status, versions) VALUES"
        " ('u', 's', 'm1', 1, 'user', 'Ann', 'I ran.', %s, true, 'done', '{1}'),"
        " ('u', 's', 'm2', 2, 'user', 'Ann', 'I swam.', %s, true, 'done', '{1}'),"
        " ('u', 's', 'm3', 3, 'user', 'Ann', 'Later.', %s, true, 'pending', '{}')",
        (T0, T0, T0),
    )
    conn.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version) VALUES (0, 'm', 3, 'c0', 'active', 1), (1, 'm', 3, 'c1', 'building', 2)"
    )


def test_counts_and_the_sessions_a_version_lacks(dsn):
    conn = jobs_repo.connect(dsn)
    _messages(conn)
    assert reextraction_repo.count_sessions(conn) == 1
    assert reextraction_repo.count_sessions_behind(conn, 2) == 1
    assert reextraction_repo.count_sessions_behind(conn, 1) == 0
    sql, params = reextraction_repo.sessions_behind(2)
    assert conn.execute(sql, params).fetchall() == [{"user_id": "u", "session_id": "s"}]
    got = reextraction_repo.done_messages(conn, [("u", "s"), ("u", "other")])
    assert list(got) == [("u", "s")]
    assert [(m.message_id, m.seq, m.content) for m in got[("u", "s")]] == [
        ("m1", 1, "I ran."),
        ("m2", 2, "I swam."),
    ]
    conn.close()


def test_a_session_rewrite_replaces_an_earlier_try_and_records_the_version(dsn):
    conn = jobs_repo.connect(dsn)
    _messages(conn)
    row = EntryRow(entry_id("u", "s", "fact", ["m1"], 2), "u", "s", "fact", "Ann ran.",
                   "Ann ran.", T0, "Monday", "Ann", ["m1"], None, {}, None, "m", 2)  # fmt: skip
    earlier = dataclasses.replace(row, id=entry_id("u", "s", "fact", ["m9"], 2), text="old")
    with conn.transaction():
        assert reextraction_repo.begin_session_rewrite(conn, 1, 2, "u", "s") == set()
        reextraction_repo.insert_generation_entries(conn, 1, [earlier])
    with conn.transaction():
        old = reextraction_repo.begin_session_rewrite(conn, 1, 2, "u", "s")
        assert old == {earlier.id}
        reextraction_repo.insert_generation_entries(conn, 1, [row])
        reextraction_repo.finish_session_rewrite(conn, 2, "u", "s", ["m1", "m2"], LLMUsage())
    assert maintenance_repo.count_entries(conn, "u", 2) == 1
    members = conn.execute("SELECT entry_id::text AS id FROM generation_members").fetchall()
    assert {m["id"] for m in members} == {row.id}  # the earlier entry left with its row
    assert reextraction_repo.count_sessions_behind(conn, 2) == 0
    versions = conn.execute("SELECT message_id, versions FROM messages ORDER BY 1").fetchall()
    assert [(v["message_id"], v["versions"]) for v in versions] == [
        ("m1", [1, 2]),
        ("m2", [1, 2]),
        ("m3", []),
    ]
    with conn.transaction():
        assert reextraction_repo.begin_session_rewrite(conn, 1, 2, "u", "gone") is None
    conn.execute("UPDATE vector_generations SET status='retired' WHERE generation=1")
    with pytest.raises(reextraction_repo.GenerationGone), conn.transaction():
        reextraction_repo.begin_session_rewrite(conn, 1, 2, "u", "s")
    conn.close()
