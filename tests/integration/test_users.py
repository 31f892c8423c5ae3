"""A user's export, erasure and import through HTTP on the real application: the round trip
is equal, the same searches find the same memories, and erasure leaves nothing in PostgreSQL
(any table) or in the vector index."""

import os
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.integration

MESSAGES = [
    ("s1", "m1", "user", "Alice", "I adopted a golden retriever, Max.", "2023/05/20 (Sat) 10:00"),
    ("s1", "m2", "assistant", None, "Lovely! How old is he?", "2023/05/20 (Sat) 10:01"),
    ("s1", "m3", "user", "Alice", "He is two. I also started the cello.", "2023/05/20 (Sat) 10:02"),
    ("s2", "m4", "user", "Alice", "We moved to Lisbon for my new job.", "2023/06/02 (Fri) 09:00"),
    ("s2", "m5", "user", "Alice", "My sister Jo visits us in July.", "2023/06/02 (Fri) 09:05"),
]  # fmt: skip
QUERIES = ["What dog does Alice have?", "Where did Alice move?", "Who visits in July?"]


def _ingest(c, user: str, messages: list[tuple] = MESSAGES) -> None:
    for session in sorted({m[0] for m in messages}):
        msgs = [
            {"role": role, "content": text, "message_id": mid, "name": name, "timestamp": ts}
            for s, mid, role, name, text, ts in messages
            if s == session
        ]
        r = c.post(
            "/v1/memories",
            json={"user_id": user, "session_id": session, "messages": msgs, "wait": True},
        )
        assert r.status_code == 200, r.text


def _searches(c, user: str, queries: list[str] = QUERIES) -> list[list[tuple[str, float]]]:
    out = []
    for q in queries:
        r = c.post("/v1/search", json={"user_id": user, "query": q, "limit": 5})
        assert r.status_code == 200, r.text
        out.append([(h["id"], h["score"]) for h in r.json()["results"]])
    return out


def traces(
    needles: list[str], skip: frozenset[str] = frozenset(), dsn: str | None = None
) -> dict[str, int]:
    """Rows of any table of the database (default: the service's) but `skip` whose text form
    holds one of `needles`."""
    found = {}
    with psycopg.connect(dsn or os.environ["MEMSERVE_PG_DSN"], autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (name,) in tables:
            if name in skip:
                continue
            n = conn.execute(
                f'SELECT count(*) FROM "{name}" x WHERE x::text LIKE ANY(%s)',
                ([f"%{s}%" for s in needles],),
            ).fetchone()[0]
            if n:
                found[name] = n
    return found


def vector_count(user: str) -> int:
    from deployments.apps import memory_index_handle

    handle = memory_index_handle()
    return handle.count_vectors.remote(user).result()


def test_export_erase_import_round_trip(running):
    user = f"port-{uuid.uuid4().hex[:8]}"
    with running.client() as c:
        _ingest(c, user)
        memories = c.get(f"/v1/memories?user_id={user}").json()["memories"]
        cello = next(m for m in memories if "cello" in m["memory"])
        r = c.patch(
            f"/v1/memories/{cello['id']}?user_id={user}", json={"memory": "Alice plays viola"}
        )
        assert r.status_code == 200
        before = _searches(c, user)
        r = c.get(f"/v1/users/{user}/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        export = r.content
        assert b"Alice plays viola" in export and export.count(b'"type": "message"') == 5
        ids = [m["id"] for m in memories]
        assert vector_count(user) == len(ids) > 0

        assert c.delete(f"/v1/users/{user}").status_code == 200
        # The audit log keeps who changed what (ids, no content) until its retention ends.
        assert traces([user, *ids], skip=frozenset({"audit_log"})) == {}
        # Sentences no other test of the session stores.
        own = [text for *_, text, _ in MESSAGES if text != "Lovely! How old is he?"]
        assert traces([*own, "Alice plays viola"]) == {}
        assert vector_count(user) == 0

        r = c.post(f"/v1/users/{user}/import", content=export)
        assert r.status_code == 200, r.text
        assert r.json()["imported"]["memory"] == len(ids)
        assert c.get(f"/v1/users/{user}/export").content == export
        after = _searches(c, user)
        assert [[i for i, _ in hits] for hits in after] == [[i for i, _ in h] for h in before]
        for hits, old in zip(after, before, strict=True):
            assert [s for _, s in hits] == pytest.approx([s for _, s in old], abs=1e-4)
        assert vector_count(user) == len(ids)

        r = c.post(f"/v1/users/{user}/import", content=export)
        assert r.status_code == 409 and r.json()["error"]["code"] == "user_not_empty"
        r = c.post(f"/v1/users/{user}x/import", content=export[: len(export) // 2])
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_import"
        assert c.get(f"/v1/users/{user}x/export").status_code == 404
