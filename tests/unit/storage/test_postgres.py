import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from serve_app.model.entries import EntryRow, entry_id
from serve_app.model.messages import NewMessage
from serve_app.storage.buffers_repo import BufferedUpdate, BuffersRepo
from serve_app.storage.postgres import _migrations, migrate
from tests.pg import admin_dsn

T0 = datetime(2023, 5, 20, tzinfo=UTC)


def msg(mid: str, content: str = "hello", minutes: int = 0) -> NewMessage:
    return NewMessage(
        message_id=mid,
        role="user",
        name="Ann",
        content=content,
        ts=T0 + timedelta(minutes=minutes),
        ts_provided=True,
        metadata={},
    )


def row(user: str, session: str, mid: str, minutes: int = 0) -> EntryRow:
    return EntryRow(
        id=entry_id(user, session, "message", [mid]),
        user_id=user,
        session_id=session,
        kind="message",
        text=f"text {mid}",
        index_text=f"text {mid}",
        ts=T0 + timedelta(minutes=minutes),
        weekday="Sat",
        speaker="Ann",
        source_message_ids=[mid],
        topic_id=None,
        metadata={},
        importance=None,
        embedding_model="m",
    )


async def test_migrations_are_idempotent(repo):
    assert await migrate(repo.pool) == []
    versions = await repo.pool.fetch("SELECT version FROM schema_migrations")
    assert sorted(r["version"] for r in versions) == [v for v, _, _ in _migrations()]


async def test_add_messages_skips_stored_ids_and_keeps_seq_dense(repo):
    assert await repo.add_messages("u", "s", [msg("a"), msg("b")], None) == ["a", "b"]
    assert await repo.add_messages("u", "s", [msg("b"), msg("c")], {"k": 1}) == ["c"]
    rows = await repo.pool.fetch(
        "SELECT message_id, seq FROM messages WHERE user_id='u' ORDER BY seq"
    )
    assert [(r["message_id"], r["seq"]) for r in rows] == [("a", 0), ("b", 1), ("c", 2)]
    # Same message id in another session or for another user is a different message.
    assert await repo.add_messages("u", "s2", [msg("a")], None) == ["a"]
    assert await repo.add_messages("v", "s", [msg("a")], None) == ["a"]


async def test_claims_are_disjoint_between_concurrent_workers(repo):
    for i in range(10):
        await repo.add_messages("u", f"s{i}", [msg("a")], None)
    async with repo.pool.acquire() as c1, c1.transaction():
        first = await BuffersRepo.claim_sessions(c1, 6)
        async with repo.pool.acquire() as c2, c2.transaction():
            second = await BuffersRepo.claim_sessions(c2, 6)
    assert len(first) == 6 and len(second) == 4
    assert not {c.session_id for c in first} & {c.session_id for c in second}


async def test_rolled_back_claim_leaves_messages_pending(repo):
    await repo.add_messages("u", "s", [msg("a")], None)
    with pytest.raises(RuntimeError):
        async with repo.pool.acquire() as conn, conn.transaction():
            [claim] = await BuffersRepo.claim_sessions(conn, 10)
            [m] = await BuffersRepo.pending_messages(conn, "u", "s", 10)
            await BuffersRepo.mark_buffered(
                conn, "u", "s", [BufferedUpdate(m.message_id, None, 1, 1)]
            )
            assert await BuffersRepo.mark_done(conn, "u", "s", [m.message_id], 1) == 1
            raise RuntimeError("crash before commit")
    status = await repo.session_status("u", "s")
    assert status["counts"]["pending"] == 1 and status["counts"]["processed"] == 0


async def test_entries_listing_pagination_and_isolation(repo):
    await repo.add_messages("u", "s", [msg(str(i)) for i in range(5)], None)
    await repo.add_messages("other", "s", [msg("x")], None)
    async with repo.pool.acquire() as conn:
        await repo.insert_entries(conn, [row("u", "s", str(i), i) for i in range(5)])
        await repo.insert_entries(conn, [row("u", "s", "0", 0)])  # retry: no duplicate
        await repo.insert_entries(conn, [row("other", "s", "x")])
    page1 = await repo.list_memories("u", None, 3, None)
    page2 = await repo.list_memories("u", None, 3, (page1[-1]["ts"], page1[-1]["id"]))
    assert [r["source_message_ids"][0] for r in page1 + page2] == ["0", "1", "2", "3", "4"]
    other_id = entry_id("other", "s", "message", ["x"])
    assert await repo.get_memory("u", other_id) is None
    assert await repo.memories_by_ids("u", [other_id]) == {}
    ids = [entry_id("u", "s", "message", [str(i)]) for i in (1, 3)]
    rows, revision = await repo.memories_and_revision("u", [*ids, other_id])
    assert rows == await repo.memories_by_ids("u", ids) and set(rows) == set(ids)
    assert revision == await repo.index_revision("u")
    assert await repo.memories_and_revision("u", [other_id]) == ({}, revision)
    assert await repo.memories_and_revision("nobody", ids) == ({}, None)


async def test_delete_user_cascades_everything(repo):
    await repo.add_messages("u", "s", [msg("a")], None)
    async with repo.pool.acquire() as conn:
        await repo.insert_entries(conn, [row("u", "s", "a")])
        assert await repo.delete_user(conn, "u")
        assert not await repo.delete_user(conn, "u")
    for table in ("users", "sessions", "messages", "memory_entries"):
        assert await repo.pool.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_failures_are_counted_then_marked_failed(repo):
    await repo.add_messages("u", "s", [msg("a")], None)
    async with repo.pool.acquire() as conn:
        [m] = await BuffersRepo.pending_messages(conn, "u", "s", 1)
    for _ in range(2):
        await BuffersRepo.record_attempt(repo.pool, "u", "s", [m.message_id], "boom", 2)
    status = await repo.session_status("u", "s")
    assert status["counts"]["failed"] == 1 and status["counts"]["pending"] == 0
    last_error = await repo.pool.fetchval("SELECT last_error FROM messages")
    assert last_error == "boom"


async def test_the_pool_reconnects_after_the_server_dropped_its_connections(repo):
    """An external server that restarts or drops sessions: the same pool serves again."""
    pool = repo.pool
    await repo.add_messages("u", "s", [msg("m1")], None)
    database = await pool.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(admin_dsn())
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            in_flight = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(5)"))
            await asyncio.sleep(0.3)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            # A statement in flight when the connection goes fails (the API answers 503) ...
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await in_flight
        # Every connection of the pool open, then all of them dropped by the server.
        await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.1)") for _ in range(4)))
        dropped = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            database,
        )
        assert dropped == 4
        await asyncio.sleep(0.5)
        # ... and the pool replaces its closed connections on the next acquire.
        assert (await repo.session_status("u", "s"))["counts"]["received"] == 1
        assert await pool.fetchval("SELECT count(*) FROM messages") == 1
    finally:
        await admin.close()


async def test_a_released_connection_keeps_no_transaction_or_lock_and_sends_no_reset(repo, pg_dsn):
    """The pool releases connections without asyncpg's reset query; what a caller left open
    (a transaction, its advisory lock, its writes) is still rolled back."""
    pool = repo.pool
    async with pool.acquire() as conn:
        raw = conn._con  # the connection under the pool's proxy, to count what it sends
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock(4242)")
        await conn.execute("CREATE TABLE left_open (x int)")
        before = raw._protocol.queries_count
    # Released with the transaction open: rolled back (one statement), nothing else sent.
    assert raw._protocol.queries_count - before <= 1
    assert not raw.is_in_transaction()
    async with pool.acquire() as conn:
        raw = conn._con
        before = raw._protocol.queries_count
        await conn.fetchval("SELECT 1")
    assert raw._protocol.queries_count - before == 1  # the query, and no reset after it
    other = await asyncpg.connect(pg_dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
        assert await other.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await other.close()
