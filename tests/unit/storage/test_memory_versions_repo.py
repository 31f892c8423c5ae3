"""Memory versions against the machine's PostgreSQL: what a version lacks, new version
numbers, and the versions no live generation indexes (dropped with their entries)."""

from __future__ import annotations

import dataclasses

from serve_app.storage import memory_versions_repo
from tests.unit.storage.versions_data import done, entry, generations, msg


async def test_behind_counts_done_messages_missing_from_a_version(two_versions):
    repo = two_versions
    assert await memory_versions_repo.behind(repo.pool, 1) == (0, 0)
    await repo.add_messages("u", "s2", [msg("m3", 2)], None)
    await repo.add_messages("u", "s3", [msg("m4", 3)], None)
    assert await memory_versions_repo.behind(repo.pool, 2) == (0, 0)  # pending: not counted
    await done(repo.pool, ["m3", "m4"], [1])
    assert await memory_versions_repo.behind(repo.pool, 2) == (2, 2)
    assert await memory_versions_repo.behind(repo.pool, 1) == (0, 0)


async def test_retired_versions_are_orphaned_and_dropped(two_versions):
    repo, pool = two_versions, two_versions.pool
    await generations(pool, (2, "retired", 3))
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [dataclasses.replace(entry("m1", 3), text="v3")])
    assert await memory_versions_repo.orphan_versions(pool) == [3]
    assert await memory_versions_repo.drop_orphan_versions(pool) == {3: 1}
    assert await pool.fetchval("SELECT count(*) FROM memory_entries WHERE version=3") == 0
    async with pool.acquire() as conn:
        assert await memory_versions_repo.next_memory_version(conn) == 4  # never reused
