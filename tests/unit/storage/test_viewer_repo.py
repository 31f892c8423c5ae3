"""The memory viewer's reads against a throwaway database: counts per user and session, messages
in order, a memory's sources and history, the feed's positions, memories per time bucket."""

import uuid

import pytest

from serve_app.storage import viewer_repo
from tests.unit.storage.versions_data import done, entry, generations, msg


async def test_users_and_sessions_carry_their_counts(two_versions):
    pool = two_versions.pool
    await two_versions.add_messages("u", "s2", [msg("x")], None)
    await pool.execute("UPDATE messages SET status='failed' WHERE message_id='x'")
    await pool.execute(
        "UPDATE sessions SET raw_tokens=100, compressed_tokens=40 WHERE session_id='s'"
    )
    await two_versions.add_messages("w", "t", [msg("y")], None)

    users = await viewer_repo.list_users(pool, "", 10, None)
    assert [(u["user_id"], u["sessions"], u["messages"], u["memories"]) for u in users] == [
        ("u", 2, 3, 2),  # memories of the active version (1) only
        ("w", 1, 1, 0),
    ]
    assert [u["user_id"] for u in await viewer_repo.list_users(pool, "", 10, "u")] == ["w"]
    assert len(await viewer_repo.list_users(pool, "", 1, None)) == 1

    by_id = {s["session_id"]: s for s in await viewer_repo.list_sessions(pool, "u")}
    assert set(by_id) == {"s", "s2"}
    s = by_id["s"]
    assert (s["received"], s["processed"], s["pending"], s["failed"], s["memories"]) == (
        2, 2, 0, 0, 2,
    )  # fmt: skip
    assert (s["raw_tokens"], s["compressed_tokens"]) == (100, 40)
    s2 = by_id["s2"]
    assert (s2["received"], s2["processed"], s2["failed"], s2["memories"]) == (1, 0, 1, 0)
    assert await viewer_repo.list_sessions(pool, "nobody") == []


async def test_messages_page_in_conversation_order(repo):
    await repo.add_messages("u", "s", [msg(f"m{i}", i) for i in range(5)], None)
    first = await viewer_repo.list_messages(repo.pool, "u", "s", -1, 3)
    assert [m["message_id"] for m in first] == ["m0", "m1", "m2"]
    rest = await viewer_repo.list_messages(repo.pool, "u", "s", first[-1]["seq"], 3)
    assert [m["message_id"] for m in rest] == ["m3", "m4"]
    assert await viewer_repo.list_messages(repo.pool, "other", "s", -1, 3) == []
    assert await viewer_repo.session_exists(repo.pool, "u", "s")
    assert not await viewer_repo.session_exists(repo.pool, "u", "nope")
    got = await viewer_repo.source_messages(repo.pool, "u", "s", ["m3", "m1", "zz"])
    assert [m["message_id"] for m in got] == ["m1", "m3"]


async def test_history_names_revisions_and_tombstones_both_ways(repo):
    pool = repo.pool
    await repo.add_messages("u", "s", [msg("m1"), msg("m2")], None)
    await done(pool, ["m1", "m2"], [1])
    kept, gone = entry("m1", 1), entry("m2", 1)
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [kept, gone])
    await pool.execute(
        "INSERT INTO memory_revisions (entry_id, user_id, old_text, new_text, old_source_ids,"
        " merged_ids) VALUES ($1, 'u', 'old', 'new', '{m1}', ARRAY[$2::uuid])",
        uuid.UUID(kept.id),
        uuid.UUID(gone.id),
    )
    await pool.execute(
        "INSERT INTO memory_tombstones (id, user_id, entry, action, reason, superseded_by)"
        " VALUES ($1, 'u', $2, 'merged', 'same fact', $3)",
        uuid.UUID(gone.id),
        {"text": "v1 m2"},
        uuid.UUID(kept.id),
    )
    [rev] = await viewer_repo.revisions(pool, "u", kept.id)
    assert (rev["old_text"], rev["new_text"], rev["merged_ids"]) == ("old", "new", [gone.id])
    assert await viewer_repo.revisions(pool, "other", kept.id) == []
    # The superseding memory and the removed one both see the tombstone.
    for mid in (kept.id, gone.id):
        [t] = await viewer_repo.tombstones_of(pool, "u", mid)
        assert (t["id"], t["superseded_by"], t["reason"]) == (gone.id, kept.id, "same fact")
        assert t["entry"] == {"text": "v1 m2"}
    assert [t["id"] for t in await viewer_repo.list_tombstones(pool, "u", 10)] == [gone.id]
    assert await viewer_repo.list_tombstones(pool, "other", 10) == []


async def test_feed_positions_and_buckets_follow_the_active_version(two_versions):
    pool = two_versions.pool
    latest = await viewer_repo.memories_created_after(pool, None, "", None, 10)
    assert {m["text"] for m in latest} == {"v1 m1", "v1 m2"}  # version 2 is not served
    assert [
        m["text"] for m in await viewer_repo.memories_created_after(pool, "u", "", None, 1)
    ] == [latest[-1]["text"]]
    position = (latest[-1]["created_at"], latest[-1]["id"])
    assert await viewer_repo.memories_created_after(pool, None, "", position, 10) == []
    await two_versions.add_messages("u", "s", [msg("m3", 2)], None)
    async with pool.acquire() as conn:
        await two_versions.insert_entries(conn, [entry("m3", 1)])
    newer = await viewer_repo.memories_created_after(pool, "u", "", position, 10)
    assert [m["text"] for m in newer] == ["v1 m3"]
    assert await viewer_repo.memories_created_after(pool, "other", "", position, 10) == []

    [bucket] = await viewer_repo.memories_per_bucket(pool, "u", "day")
    assert bucket["memories"] == 3
    await generations(pool, (2, "previous", 2))
    await pool.execute("UPDATE vector_generations SET status='retired' WHERE generation=0")
    await pool.execute(
        "UPDATE vector_generations SET status='active' WHERE generation=1"
    )  # version 2 served now
    [bucket] = await viewer_repo.memories_per_bucket(pool, "u", "hour")
    assert bucket["memories"] == 2
    with pytest.raises(ValueError):
        await viewer_repo.memories_per_bucket(pool, "u", "week")


async def test_a_tenants_users_feed_and_jobs_stay_its_own(repo):
    pool = repo.pool
    for user in ("plain", "acme/ann", "acme/bob", "zeta/ann"):
        await repo.add_messages(user, "s", [msg("m1")], None)
        await pool.execute(
            "INSERT INTO memory_entries (id, user_id, session_id, text, index_text, ts, weekday,"
            " source_message_ids, embedding_model) SELECT gen_random_uuid(), $1, 's', $1, $1,"
            " now(), 'Sat', '{m1}', 'm'",
            user,
        )
        await pool.execute(
            "INSERT INTO jobs (id, kind, user_id) VALUES (gen_random_uuid(), 'link', $1)", user
        )
    await pool.execute("INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), 'reembed')")

    def ids(rows, key="user_id"):
        return sorted(r[key] for r in rows)

    assert ids(await viewer_repo.list_users(pool, "", 10, None)) == ["plain"]
    assert ids(await viewer_repo.list_users(pool, "acme/", 10, None)) == ["acme/ann", "acme/bob"]
    assert ids(await viewer_repo.list_users(pool, "acme/", 10, "acme/ann")) == ["acme/bob"]
    feed = await viewer_repo.memories_created_after(pool, None, "acme/", None, 10)
    assert ids(feed) == ["acme/ann", "acme/bob"]
    assert ids(await viewer_repo.memories_created_after(pool, None, "", None, 10)) == ["plain"]
    assert ids(await viewer_repo.list_jobs(pool, "zeta/", 10)) == ["zeta/ann"]
    assert len(await viewer_repo.list_jobs(pool, None, 10)) == 5
