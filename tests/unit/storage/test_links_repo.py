"""Links between memories, written by the link job and read with search hits."""

import uuid

from serve_app.maintenance.linking import make_link
from serve_app.storage import jobs_repo, links_repo
from serve_app.storage.postgres import create_pool
from tests.unit.storage.job_db import entry_ids, seeded

dsn = seeded  # the seeded database, as the fixture `dsn`


async def test_links_are_upserted_per_pair_and_read_both_ways(dsn):
    a, b, c = entry_ids()
    conn = jobs_repo.connect(dsn)
    job = str(uuid.uuid4())
    jobs_repo.ensure_job(conn, job, "link", None, {})
    links_repo.save_links(conn, job, "u", [make_link(a, b, "same trip", 0.25)])
    links_repo.save_links(conn, job, "u", [make_link(b, a, "same day", 0.75)])  # same pair
    links_repo.save_links(conn, job, "u", [make_link(a, c, "weak", 0.5)])
    missing = str(uuid.uuid4())
    links_repo.save_links(conn, job, "u", [make_link(a, missing, "gone", 0.99)])
    assert links_repo.count_job_links(conn, job) == 2
    conn.close()

    pool = await create_pool(dsn, 1, 2)
    try:
        got = await links_repo.linked_memories(pool, "u", [a, b], per_hit=1)
        assert got == {
            a: [{"id": b, "reason": "same day", "link_score": 0.75}],
            b: [{"id": a, "reason": "same day", "link_score": 0.75}],
        }
        got = await links_repo.linked_memories(pool, "u", [a], per_hit=5)
        assert [x["id"] for x in got[a]] == [b, c]
        assert await links_repo.linked_memories(pool, "other", [a], per_hit=5) == {}
    finally:
        await pool.close()
