"""A user's rows out and back in (export_repo) on throwaway databases: a round trip through
erasure is equal, an import is all or nothing, and erasure leaves no trace in any table."""

from __future__ import annotations

import dataclasses
import json
import uuid

import asyncpg
import pytest

from serve_app.api import user_export
from serve_app.storage import export_repo
from serve_app.storage.postgres import Repository
from tests.unit.storage.versions_data import done, entry, generations, msg

USER = "exp-user-7f3a"


async def _seed(repo: Repository, user: str = USER) -> list[str]:
    """Rows of `user` in every table an export reads; returns the entry ids."""
    pool = repo.pool
    await repo.add_messages(user, "s", [msg("m1"), msg("m2", 1), msg("m3", 2)], {"topic": "x"})
    await repo.add_messages(user, "s2", [msg("m4")], None)
    await done(pool, ["m1", "m2"], [1])
    rows = [entry(m, 1) for m in ("m1", "m2")]
    rows = [
        dataclasses.replace(r, user_id=user, id=str(uuid.uuid5(uuid.NAMESPACE_URL, user + r.id)))
        for r in rows
    ]
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, rows)
    a, b = sorted(r.id for r in rows)
    job = uuid.uuid4()
    shared_job = uuid.uuid4()
    await pool.execute(
        "UPDATE session_buffers SET state=$3, buffered_messages=1"
        " WHERE user_id=$1 AND session_id=$2",
        user, "s", {"sensory": ["m3"]},
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO flush_requests (user_id, session_id, upto_seq) VALUES ($1, 's', 2)", user
    )
    await pool.execute(
        "INSERT INTO llm_tasks (user_id, session_id, kind, flush_index, message_ids,"
        " lease_token, leased_until) VALUES ($1, 's', 'extract', 0, '{m3}', $2, now())",
        user, uuid.uuid4(),
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO memory_links (user_id, src, dst, reason, score)"
        " VALUES ($1, $2, $3, 'same dog', 0.75)",
        user, uuid.UUID(a), uuid.UUID(b),
    )  # fmt: skip
    for old, new in (("one", "two"), ("two", "three")):
        await pool.execute(
            "INSERT INTO memory_revisions (entry_id, user_id, old_text, new_text, old_source_ids,"
            " merged_ids) VALUES ($1, $2, $3, $4, '{m1}', $5)",
            uuid.UUID(a), user, old, new, [uuid.UUID(b)],
        )  # fmt: skip
    await pool.execute(
        "INSERT INTO memory_tombstones (id, user_id, entry, action, reason, superseded_by)"
        " VALUES ($1, $2, $3, 'merged', 'duplicate', $4)",
        uuid.uuid4(), user, {"text": "old"}, uuid.UUID(a),
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO jobs (id, kind, user_id, params) VALUES ($1, 'consolidate', $2, '{\"k\": 1}'),"
        " ($3, 'consolidate', NULL, '{}')",
        job, user, shared_job,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO job_items (job_id, stage, item_id) VALUES ($1, 'queue', $2)", job, a
    )
    await pool.execute(
        "INSERT INTO job_items (job_id, stage, item_id) VALUES ($1, 'queue', $2)", shared_job, b
    )
    for j in (job, shared_job):
        await pool.execute(
            "INSERT INTO consolidation_groups (job_id, user_id, anchor_id, candidates, decision,"
            " outcome) VALUES ($1, $2, $3, $4, $5, 'applied')",
            j, user, uuid.UUID(a), [{"id": b, "score": 0.9}], {"action": "merge"},
        )  # fmt: skip
    return [a, b]


async def _export(pool) -> list[str]:
    return [line async for line in user_export.lines(USER, export_repo.export_user(pool, USER))]


async def _erase(pool, user: str = USER) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await export_repo.erase_user_traces(conn, user)
        await Repository.delete_user(conn, user)


async def _import(pool, lines: list[str], user: str = USER) -> list[asyncpg.Record]:
    parsed = user_export.parse("".join(lines).encode(), await export_repo.record_fields(pool))
    load = export_repo.UserImport(pool, user)
    try:
        entries = await load.begin(parsed.records, parsed.memory_version)
        await load.commit()
    finally:
        await load.rollback()
    return entries


async def _traces(pool, needles: list[str]) -> dict[str, int]:
    """Rows of any table whose text form contains one of `needles`."""
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    )
    out = {}
    for t in tables:
        name = t["table_name"]
        n = await pool.fetchval(
            f'SELECT count(*) FROM "{name}" x WHERE x::text LIKE ANY($1::text[])',
            [f"%{s}%" for s in needles],
        )
        if n:
            out[name] = n
    return out


async def test_export_erase_import_export_is_equal(repo: Repository):
    pool = repo.pool
    ids = await _seed(repo)
    before = await _export(pool)
    kinds = {json.loads(line)["type"] for line in before}
    assert kinds == {"header", "end", *(k.name for k in export_repo.KINDS)}
    end = json.loads(before[-1])
    assert end["counts"]["message"] == 4 and end["counts"]["memory"] == 2
    assert end["counts"]["revision"] == 2 and end["counts"]["job"] == 2
    assert all(USER not in line for line in before[1:])  # ids come from the path
    revision = await pool.fetchval("SELECT index_revision FROM users WHERE user_id=$1", USER)

    await _erase(pool)
    assert await _traces(pool, [USER, *ids]) == {}
    # the job that ran for every user stays, without this user's done-items
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1

    entries = await _import(pool, before)
    assert sorted(r["id"] for r in entries) == sorted(ids)
    assert await _export(pool) == before
    # a fresh cache key: no search replica can take a cached index of the erased user for it
    assert await pool.fetchval("SELECT index_revision FROM users WHERE user_id=$1", USER) > (
        revision
    )
    lease = await pool.fetchval("SELECT lease_token FROM llm_tasks WHERE user_id=$1", USER)
    assert lease is None


async def test_import_refuses_a_user_that_exists_and_is_all_or_nothing(repo: Repository):
    pool = repo.pool
    await _seed(repo)
    lines = await _export(pool)
    with pytest.raises(export_repo.ImportConflict, match="exists"):
        await _import(pool, lines)

    # Under another id the messages load but the entry ids are taken: nothing stays.
    with pytest.raises(export_repo.ImportConflict, match="memory records"):
        await _import(pool, lines, user="other")
    assert await _traces(pool, ["other"]) == {}

    await _erase(pool)
    bad = [
        json.dumps({"type": "message", "data": {**json.loads(line)["data"], "ts": "not a time"}})
        + "\n"
        if json.loads(line)["type"] == "message"
        else line
        for line in lines
    ]
    with pytest.raises(export_repo.ImportRejected, match="message records"):
        await _import(pool, bad)
    assert await _traces(pool, [USER]) == {}


async def test_entries_join_the_memory_version_served_here(repo: Repository):
    pool = repo.pool
    ids = await _seed(repo)
    lines = await _export(pool)
    await _erase(pool)
    await generations(pool, (0, "previous", 1), (1, "active", 3))
    entries = await _import(pool, lines)
    assert {r["version"] for r in entries} == {3}
    assert sorted(r["id"] for r in entries) == sorted(ids)
    versions = await pool.fetch(
        "SELECT message_id, versions FROM messages WHERE user_id=$1 ORDER BY message_id", USER
    )
    assert [r["versions"] for r in versions] == [[3], [3], [], []]
