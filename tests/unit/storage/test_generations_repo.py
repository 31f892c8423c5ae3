"""Switching index generations against the machine's PostgreSQL: every read serves only the
active generation's memory version, a switch waits for in-flight writes, a new version may not
become active while it lacks done messages, and a rollback queues what the restored version
lacks for the worker. Plus the generation rows the lifecycle reads and writes."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.ingest.llm_step import LLMStep
from serve_app.llm.config import LLMSettings
from serve_app.model.entries import entry_id
from serve_app.storage import generations_repo, memory_versions_repo
from tests.unit.storage.versions_data import done, entry, msg, status_of


def test_entry_ids_differ_per_version_and_version_1_keeps_its_ids():
    v1 = entry_id("u", "s", "message", ["m1"])
    assert entry_id("u", "s", "message", ["m1"], 1) == v1
    assert len({v1, entry_id("u", "s", "message", ["m1"], 2), entry_id("u", "s", "message",
                                                                      ["m1"], 3)}) == 3  # fmt: skip


async def test_reads_serve_only_the_active_version(two_versions):
    repo = two_versions
    listed = await repo.list_memories("u", None, 10, None)
    assert sorted(r["text"] for r in listed) == ["v1 m1", "v1 m2"]
    v2_id = entry_id("u", "s", "message", ["m1"], 2)
    assert await repo.get_memory("u", v2_id) is None
    assert set(await repo.memories_by_ids("u", [v2_id])) == set()
    assert set(await repo.memories_by_ids("u", [v2_id], 2)) == {v2_id}
    assert (await repo.session_status("u", "s"))["memories"] == 2
    assert sorted(r["text"] for r in await repo.index_docs("u", 2)) == ["v2 m1", "v2 m2"]
    async with repo.pool.acquire() as conn:
        assert await repo.update_memory(conn, "u", v2_id, "x", "x", None, None) is None
        assert not await repo.delete_memory(conn, "u", v2_id)

    async with repo.pool.acquire() as conn, conn.transaction():
        switched = await generations_repo.switch(conn, 1)
    assert (switched.active, switched.memory_version, switched.replaced) == (1, 2, 0)
    assert switched.requeued == {"messages": 0, "tasks": 0}
    assert await status_of(repo.pool) == {0: "previous", 1: "active"}
    listed = await repo.list_memories("u", None, 10, None)
    assert sorted(r["text"] for r in listed) == ["v2 m1", "v2 m2"]
    assert (await repo.get_memory("u", v2_id))["version"] == 2


async def test_a_new_version_lacking_done_messages_may_not_become_active(two_versions):
    repo = two_versions
    await repo.add_messages("u", "s", [msg("m3", 2)], None)
    await done(repo.pool, ["m3"], [1])  # processed by the worker while version 2 was built
    assert await memory_versions_repo.behind(repo.pool, 2) == (1, 1)
    with pytest.raises(memory_versions_repo.VersionBehind, match="1 done messages of 1 sessions"):
        async with repo.pool.acquire() as conn, conn.transaction():
            await generations_repo.switch(conn, 1)
    assert await status_of(repo.pool) == {0: "active", 1: "building"}  # rolled back
    with pytest.raises(ValueError, match="cannot activate"):
        async with repo.pool.acquire() as conn, conn.transaction():
            await generations_repo.switch(conn, 0)  # already active


async def test_rollback_queues_what_the_restored_version_lacks_and_the_worker_fills_it(
    two_versions,
):
    repo, pool = two_versions, two_versions.pool
    async with pool.acquire() as conn, conn.transaction():
        await generations_repo.switch(conn, 1)
    # While version 2 is active, the worker makes memories of new messages in version 2 only.
    await repo.add_messages("u", "s", [msg(f"n{i}", 10 + i) for i in range(25)], None)
    await done(pool, [f"n{i}" for i in range(25)], [2])
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [entry(f"n{i}", 2) for i in range(25)])

    async with pool.acquire() as conn, conn.transaction():
        back = await generations_repo.switch(conn, 0, ("previous",))  # the rollback
    assert back.memory_version == 1 and back.requeued == {"messages": 25, "tasks": 2}
    assert await status_of(pool) == {0: "active", 1: "previous"}
    tasks = await pool.fetch(
        "SELECT flush_index, message_ids FROM llm_tasks ORDER BY flush_index DESC"
    )
    assert [len(t["message_ids"]) for t in tasks] == [20, 5]
    assert all(t["flush_index"] < -1 for t in tasks)
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE status='buffered'") == 25
    listed = await repo.list_memories("u", None, 100, None)
    assert sorted(r["text"] for r in listed) == ["v1 m1", "v1 m2"]

    # The worker's LLM step (extractive here) writes them into the restored version.
    indexed: list[int] = []

    async def embed(texts):
        return [[1.0, 0.0, 0.0] for _ in texts]

    async def index(points, version):
        indexed.append(version)

    step = LLMStep(repo, embed, index, embedding_model="m", llm=None,
                           llm_settings=LLMSettings(), entry_unit="message")  # fmt: skip
    while (await step.process()).did_work:
        pass
    assert set(indexed) == {1}
    listed = await repo.list_memories("u", None, 100, None)
    assert sorted(m for r in listed for m in r["source_message_ids"]) == sorted(
        ["m1", "m2", *(f"n{i}" for i in range(25))]
    )
    versions = await pool.fetch("SELECT DISTINCT versions FROM messages WHERE message_id ~ '^n'")
    assert [r["versions"] for r in versions] == [[2, 1]]
    assert await memory_versions_repo.behind(pool, 1) == (0, 0)
    assert await memory_versions_repo.behind(pool, 2) == (0, 0)  # nothing lost either way
    # Switching forward again requeues nothing: every message is in both versions.
    async with pool.acquire() as conn, conn.transaction():
        again = await generations_repo.switch(conn, 1, ("previous",))
    assert again.requeued == {"messages": 0, "tasks": 0}


async def test_a_switch_waits_for_entry_writes_in_flight(two_versions):
    repo, pool = two_versions, two_versions.pool
    async with pool.acquire() as writer, writer.transaction():
        version, extraction = await repo.lock_active_version(writer)
        assert (version, extraction) == (1, {})

        async def switch():
            async with pool.acquire() as conn, conn.transaction():
                return await generations_repo.switch(conn, 1)

        task = asyncio.create_task(switch())
        await asyncio.sleep(0.3)
        assert not task.done()  # blocked behind the writer's shared lock
    switched = await asyncio.wait_for(task, 5)
    assert switched.memory_version == 2


async def test_generation_rows_first_building_and_previous(repo):
    pool = repo.pool
    await generations_repo.ensure_first(pool, "m", 3, "base")
    await generations_repo.ensure_first(pool, "other", 5, "elsewhere")  # exists: kept
    [first] = await generations_repo.live(pool)
    assert (first["generation"], first["embedding_model"], first["dim"]) == (0, "m", 3)
    assert (first["collection"], first["status"], first["memory_version"]) == ("base", "active", 1)
    assert await generations_repo.previous(pool) is None

    async with pool.acquire() as conn, conn.transaction():
        n, abandoned = await generations_repo.insert_building(conn, "m2", 4, "base", 1, None)
    assert (n, abandoned) == (1, [])
    assert (await generations_repo.building(pool, "m2", 1))["generation"] == 1
    assert await generations_repo.building(pool, "m2", 2) is None
    # One rebuild at a time: a second build abandons the first.
    async with pool.acquire() as conn, conn.transaction():
        n, abandoned = await generations_repo.insert_building(conn, "m", 3, "base", 2, {"a": 1})
    assert (n, abandoned) == (2, [(1, "base__g1")])
    row = await generations_repo.get(pool, 2)
    assert (row["collection"], row["status"], row["extraction"]) == (
        "base__g2",
        "building",
        {"a": 1},
    )
    assert [r["generation"] for r in await generations_repo.live(pool)] == [0, 2]
    assert (await generations_repo.get(pool, 1))["status"] == "retired"
    assert await generations_repo.get(pool, 9) is None


async def test_members_record_what_a_generation_holds_unless_changed_since(two_versions):
    pool = two_versions.pool
    todo = await generations_repo.unindexed_entries(pool, 1, 2, 10)
    assert sorted(r["index_text"] for r in todo) == ["v2 m1", "v2 m2"]
    assert await generations_repo.missing_count(pool, 1) == 2
    assert len(await generations_repo.unindexed_entries(pool, 1, 2, 1)) == 1  # limit
    first, second = todo
    await pool.execute(
        "UPDATE memory_entries SET updated_at = updated_at + interval '1 second' WHERE id=$1::uuid",
        second["id"],
    )
    await generations_repo.mark_members(
        pool, 1, [(r["id"], r["updated_at"]) for r in todo]
    )  # the second changed after it was read: not a member
    assert [r["id"] for r in await generations_repo.unindexed_entries(pool, 1, 2, 10)] == [
        second["id"]
    ]
    assert await generations_repo.missing_count(pool, 1) == 1
    await generations_repo.forget_member(pool, first["id"])
    assert await generations_repo.missing_count(pool, 1) == 2
    assert await generations_repo.missing_count(pool, 0) == 2  # generation 0: version 1
