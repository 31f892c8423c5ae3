"""Memory versions against the machine's PostgreSQL: every read serves only the active
version, a switch waits for in-flight writes, a new version may not become active while it
lacks done messages, and a rollback queues what the restored version lacks for the worker."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.ingest.llm_step import LLMStep
from serve_app.llm.config import LLMSettings
from serve_app.model.entries import EntryRow, entry_id
from serve_app.model.messages import NewMessage
from serve_app.storage import versions_repo
from serve_app.storage.postgres import Repository

T0 = datetime(2023, 5, 20, tzinfo=UTC)


def msg(mid: str, minutes: int = 0) -> NewMessage:
    return NewMessage(mid, "user", "Ann", f"Ann says {mid}", T0 + timedelta(minutes=minutes),
                      True, {})  # fmt: skip


def entry(mid: str, version: int, session: str = "s") -> EntryRow:
    return EntryRow(
        id=entry_id("u", session, "message", [mid], version),
        user_id="u",
        session_id=session,
        kind="message",
        text=f"v{version} {mid}",
        index_text=f"v{version} {mid}",
        ts=T0,
        weekday="Saturday",
        speaker="Ann",
        source_message_ids=[mid],
        topic_id=None,
        metadata={},
        importance=None,
        embedding_model="m",
        version=version,
    )


async def generations(pool, *rows) -> None:
    for gen, status, version in rows:
        await pool.execute(
            "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
            " status, memory_version) VALUES ($1, 'm', 3, $2, $3, $4)",
            gen,
            f"c{gen}",
            status,
            version,
        )


async def done(pool, mids, versions) -> None:
    await pool.execute(
        "UPDATE messages SET status='done', versions=$2 WHERE message_id = ANY($1::text[])",
        list(mids),
        list(versions),
    )


async def status_of(pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT generation, status FROM vector_generations")
    return {r["generation"]: r["status"] for r in rows}


@pytest.fixture
async def two_versions(repo: Repository):
    """User u, session s, messages m1, m2 done in versions 1 and 2; generation 0 (version 1)
    active, generation 1 (version 2) building."""
    pool = repo.pool
    await repo.add_messages("u", "s", [msg("m1"), msg("m2", 1)], None)
    await done(pool, ["m1", "m2"], [1, 2])
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [entry(m, v) for m in ("m1", "m2") for v in (1, 2)])
    await generations(pool, (0, "active", 1), (1, "building", 2))
    return repo


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
        switched = await versions_repo.switch(conn, 1)
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
    assert await versions_repo.behind(repo.pool, 2) == (1, 1)
    with pytest.raises(versions_repo.VersionBehind, match="1 done messages of 1 sessions"):
        async with repo.pool.acquire() as conn, conn.transaction():
            await versions_repo.switch(conn, 1)
    assert await status_of(repo.pool) == {0: "active", 1: "building"}  # rolled back
    with pytest.raises(ValueError, match="cannot activate"):
        async with repo.pool.acquire() as conn, conn.transaction():
            await versions_repo.switch(conn, 0)  # already active


async def test_rollback_queues_what_the_restored_version_lacks_and_the_worker_fills_it(
    two_versions,
):
    repo, pool = two_versions, two_versions.pool
    async with pool.acquire() as conn, conn.transaction():
        await versions_repo.switch(conn, 1)
    # While version 2 is active, the worker makes memories of new messages in version 2 only.
    await repo.add_messages("u", "s", [msg(f"n{i}", 10 + i) for i in range(25)], None)
    await done(pool, [f"n{i}" for i in range(25)], [2])
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [entry(f"n{i}", 2) for i in range(25)])

    async with pool.acquire() as conn, conn.transaction():
        back = await versions_repo.switch(conn, 0, ("previous",))  # the rollback
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
    assert await versions_repo.behind(pool, 1) == (0, 0)
    assert await versions_repo.behind(pool, 2) == (0, 0)  # nothing lost either way
    # Switching forward again requeues nothing: every message is in both versions.
    async with pool.acquire() as conn, conn.transaction():
        again = await versions_repo.switch(conn, 1, ("previous",))
    assert again.requeued == {"messages": 0, "tasks": 0}


async def test_a_switch_waits_for_entry_writes_in_flight(two_versions):
    repo, pool = two_versions, two_versions.pool
    async with pool.acquire() as writer, writer.transaction():
        version, extraction = await repo.lock_active_version(writer)
        assert (version, extraction) == (1, {})

        async def switch():
            async with pool.acquire() as conn, conn.transaction():
                return await versions_repo.switch(conn, 1)

        task = asyncio.create_task(switch())
        await asyncio.sleep(0.3)
        assert not task.done()  # blocked behind the writer's shared lock
    switched = await asyncio.wait_for(task, 5)
    assert switched.memory_version == 2


async def test_retired_versions_are_orphaned_and_dropped(two_versions):
    repo, pool = two_versions, two_versions.pool
    await generations(pool, (2, "retired", 3))
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [dataclasses.replace(entry("m1", 3), text="v3")])
    assert await versions_repo.orphan_versions(pool) == [3]
    assert await versions_repo.drop_orphan_versions(pool) == {3: 1}
    assert await pool.fetchval("SELECT count(*) FROM memory_entries WHERE version=3") == 0
    async with pool.acquire() as conn:
        assert await versions_repo.next_memory_version(conn) == 4  # never reused
