"""Links between related memories (`memory_links`): written by the link job, read with
search hits when a search asks for them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import psycopg

from serve_app.maintenance.linking import Link


def save_links(conn: psycopg.Connection, job_id: str, user_id: str, links: Sequence[Link]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO memory_links (user_id, src, dst, reason, score, job_id)"
            " SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM memory_entries"
            " WHERE id=%s) AND EXISTS (SELECT 1 FROM memory_entries WHERE id=%s)"
            " ON CONFLICT (src, dst) DO UPDATE SET reason=EXCLUDED.reason, score=EXCLUDED.score,"
            " job_id=EXCLUDED.job_id",
            [
                (user_id, lk.src, lk.dst, lk.reason, lk.score, job_id, lk.src, lk.dst)
                for lk in links
            ],
        )


def count_job_links(conn: psycopg.Connection, job_id: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM memory_links WHERE job_id=%s", (job_id,)
    ).fetchone()["n"]


async def linked_memories(
    pool: asyncpg.Pool, user_id: str, ids: Sequence[str], per_hit: int
) -> dict[str, list[dict]]:
    """For each id, its linked memories (strongest first): {id, text, reason, score}."""
    rows = await pool.fetch(
        "SELECT hit::text AS hit, other::text AS other, reason, score FROM ("
        " SELECT src AS hit, dst AS other, reason, score FROM memory_links"
        "  WHERE user_id=$1 AND src = ANY($2::uuid[])"
        " UNION ALL"
        " SELECT dst, src, reason, score FROM memory_links"
        "  WHERE user_id=$1 AND dst = ANY($2::uuid[])) l ORDER BY hit, score DESC",
        user_id,
        [uuid.UUID(i) for i in ids],
    )
    out: dict[str, list[dict]] = {}
    for r in rows:
        lst = out.setdefault(r["hit"], [])
        if len(lst) < per_hit:
            lst.append({"id": r["other"], "reason": r["reason"], "link_score": r["score"]})
    return out
