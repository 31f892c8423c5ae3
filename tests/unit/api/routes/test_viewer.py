"""The viewer's routes over a throwaway database (its SQL is real) and a fake MemoryIndex handle:
shapes, paging, 404 / 409 / 422 answers. The browser drives them in
tests/integration/test_viewer_ui.py."""

import asyncio
import uuid

import pytest
from fastapi.testclient import TestClient

from serve_app.api import services as services_module
from serve_app.api.app import create_app
from serve_app.api.services import Services
from serve_app.settings import Settings
from serve_app.storage import jobs_repo
from serve_app.storage.generations_repo import GenerationIncomplete
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database
from tests.unit.api.routes.test_routes import ADMIN_KEY, Handle, bearer, row
from tests.unit.storage.versions_data import done, entry, msg

KEPT, GONE, OTHER = entry("m1", 1), entry("m2", 1), entry("m3", 1)


async def _seed(dsn: str) -> None:
    pool = await create_pool(dsn, 1, 2)
    try:
        await migrate(pool)
        repo = Repository(pool)
        await repo.add_messages("u", "s", [msg("m1"), msg("m2", 1), msg("m3", 2)], None)
        await done(pool, ["m1", "m2", "m3"], [1])
        await pool.execute(
            "UPDATE sessions SET raw_tokens=200, compressed_tokens=50, llm_input_tokens=7"
        )
        async with pool.acquire() as conn:
            await repo.insert_entries(conn, [KEPT, GONE, OTHER])
        await pool.execute(
            "INSERT INTO memory_links (user_id, src, dst, reason, score)"
            " VALUES ('u', LEAST($1::uuid, $2::uuid), GREATEST($1::uuid, $2::uuid),"
            " 'both Ann', 0.8)",
            uuid.UUID(KEPT.id),
            uuid.UUID(OTHER.id),
        )
        await pool.execute(
            "INSERT INTO memory_tombstones (id, user_id, entry, action, reason, superseded_by)"
            " SELECT id, user_id, to_jsonb(e), 'merged', 'said twice', $2 FROM memory_entries e"
            " WHERE id=$1",
            uuid.UUID(GONE.id),
            uuid.UUID(KEPT.id),
        )
        await pool.execute("DELETE FROM memory_entries WHERE id=$1", uuid.UUID(GONE.id))
        await pool.execute(
            "INSERT INTO memory_revisions (entry_id, user_id, old_text, new_text, old_source_ids,"
            " merged_ids) VALUES ($1, 'u', 'v1 m1', 'Ann says m1 and m2', '{m1}', ARRAY[$2::uuid])",
            uuid.UUID(KEPT.id),
            uuid.UUID(GONE.id),
        )
        await jobs_repo.create_job_async(pool, "link", "u", {})
    finally:
        await pool.close()


def _activate(n: int) -> dict:
    if n == 2:
        raise GenerationIncomplete("generation 2 still lacks 3 entries")
    if n == 0:
        raise ValueError("generation 0 is 'active', cannot activate it")
    return {"active": n}


@pytest.fixture(scope="module")
def viewer():
    dsn = asyncio.run(create_database())
    asyncio.run(_seed(dsn))
    states = ((0, "active"), (1, "previous"), (2, "building"))
    gens = [{"generation": n, "status": s} for n, s in states]
    memory_index = Handle(
        generation_status=lambda: {"generations": gens},
        activate_generation=_activate,
        search=lambda *a, **kw: {
            "results": [row(1, score=0.9, scores={"vector": 0.5, "bm25": None, "fused": 0.7})],
            "took_ms": 2.0,
        },
    )
    svc = Services(Settings(pg_dsn=dsn), memory_index, None, None, admin_key=ADMIN_KEY)
    app = create_app(Settings())
    app.dependency_overrides[services_module.services] = lambda: svc
    try:
        with TestClient(app, raise_server_exceptions=False, headers=bearer(ADMIN_KEY)) as c:
            yield c, memory_index
    finally:
        asyncio.run(drop_database(dsn))


def test_users_and_their_sessions_with_pipeline_status(viewer):
    c, _ = viewer
    body = c.get("/v1/users").json()
    assert body["next_after"] is None
    [u] = body["users"]
    assert (u["user_id"], u["sessions"], u["messages"], u["memories"]) == ("u", 1, 3, 2)
    assert c.get("/v1/users", params={"after": "u"}).json()["users"] == []
    assert c.get("/v1/users", params={"after": "bad id"}).status_code == 422
    [s] = c.get("/v1/users/u/sessions").json()["sessions"]
    assert s["messages"] == {"received": 3, "processed": 3, "pending": 0, "buffered": 0,
                             "failed": 0}  # fmt: skip
    assert (s["memories"], s["tokens"]["compression_ratio"], s["tokens"]["llm_input"]) == (
        2, 0.25, 7,
    )  # fmt: skip
    r = c.get("/v1/users/nobody/sessions")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_user")
    # Ids in paths follow the id pattern, as ids in queries and bodies do.
    for path in (
        "/v1/users/a%20b/sessions",
        "/v1/users/a%20b/tombstones",
        "/v1/users/a%20b/memories-over-time",
        "/v1/sessions/a%20b/messages?user_id=u",
    ):
        assert c.get(path).status_code == 422, path  # fmt: skip


def test_messages_page_in_order(viewer):
    c, _ = viewer
    first = c.get("/v1/sessions/s/messages", params={"user_id": "u", "limit": 2}).json()
    assert [m["message_id"] for m in first["messages"]] == ["m1", "m2"]
    assert first["messages"][0]["status"] == "done"
    rest = c.get(
        "/v1/sessions/s/messages",
        params={"user_id": "u", "after_seq": first["next_after_seq"]},
    ).json()
    assert ([m["message_id"] for m in rest["messages"]], rest["next_after_seq"]) == (["m3"], None)
    r = c.get("/v1/sessions/nope/messages", params={"user_id": "u"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_session")
    assert c.get("/v1/sessions/s/messages", params={"user_id": "u", "limit": 0}).status_code == 422
    # Past PostgreSQL's integer: refused before the database sees it.
    too_far = {"user_id": "u", "after_seq": 978329509692}
    assert c.get("/v1/sessions/s/messages", params=too_far).status_code == 422


def test_details_show_sources_links_and_history(viewer):
    c, _ = viewer
    d = c.get(f"/v1/memories/{KEPT.id}/details", params={"user_id": "u"}).json()
    assert d["memory"]["id"] == KEPT.id and d["removed"] is None
    assert [s["message_id"] for s in d["sources"]] == ["m1"]
    assert [(lk["memory"]["id"], lk["reason"]) for lk in d["links"]] == [(OTHER.id, "both Ann")]
    [rev] = d["revisions"]
    assert (rev["new_text"], rev["merged_ids"]) == ("Ann says m1 and m2", [GONE.id])
    [t] = d["tombstones"]
    assert (t["id"], t["superseded_by"], t["reason"]) == (GONE.id, KEPT.id, "said twice")

    gone = c.get(f"/v1/memories/{GONE.id}/details", params={"user_id": "u"}).json()
    assert gone["memory"] is None and gone["removed"]["id"] == GONE.id
    assert gone["removed"]["entry"]["text"] == "v1 m2"
    assert [s["message_id"] for s in gone["sources"]] == ["m2"]
    [t] = c.get("/v1/users/u/tombstones").json()["tombstones"]
    assert t["id"] == GONE.id

    r = c.get(f"/v1/memories/{KEPT.id}/details", params={"user_id": "other"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_memory")
    r = c.get("/v1/memories/nope/details", params={"user_id": "u"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_memory_id")


def test_feed_growth_and_jobs(viewer):
    c, _ = viewer
    feed = c.get("/v1/feed").json()
    assert {m["id"] for m in feed["memories"]} == {KEPT.id, OTHER.id}
    assert {m["user_id"] for m in feed["memories"]} == {"u"}
    again = c.get("/v1/feed", params={"cursor": feed["cursor"]}).json()
    assert again == {"memories": [], "cursor": feed["cursor"]}
    assert c.get("/v1/feed", params={"user_id": "other"}).json() == {"memories": [],
                                                                     "cursor": None}  # fmt: skip
    r = c.get("/v1/feed", params={"cursor": "junk!"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_cursor")

    growth = c.get("/v1/users/u/memories-over-time", params={"bucket": "hour"}).json()
    assert growth["bucket"] == "hour" and [p["memories"] for p in growth["points"]] == [2]
    r = c.get("/v1/users/u/memories-over-time", params={"bucket": "week"})
    assert r.status_code == 422
    [job] = c.get("/v1/jobs").json()["jobs"]
    assert (job["kind"], job["status"], job["user_id"]) == ("link", "pending", "u")


def test_activate_a_generation(viewer):
    c, memory_index = viewer
    r = c.post("/v1/generations/1/activate")
    assert (r.status_code, r.json()) == (200, {"active": 1})
    assert memory_index.calls[-1] == ("activate_generation", (1,), {})
    for n in (0, 2):
        r = c.post(f"/v1/generations/{n}/activate")
        assert (r.status_code, r.json()["error"]["code"]) == (409, "cannot_activate"), r.text
    r = c.post("/v1/generations/9/activate")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_generation")


def test_search_explains_scores_only_when_asked(viewer):
    c, memory_index = viewer
    body = c.post("/v1/search", json={"user_id": "u", "query": "x", "explain": True}).json()
    assert body["results"][0]["scores"] == {"vector": 0.5, "bm25": None, "fused": 0.7}
    assert memory_index.calls[-1][2] == {"explain": True}
    c.post("/v1/search", json={"user_id": "u", "query": "x"})
    assert memory_index.calls[-1][2] == {}


def test_a_tenants_key_reads_only_its_tenant(viewer):
    c, _ = viewer
    r = c.post("/v1/keys", json={"tenant": "acme", "name": "viewer"})
    assert r.status_code == 201, r.text
    tenant = bearer(r.json()["key"])
    # The admin's users (tenant default) are not the tenant's.
    assert c.get("/v1/users", headers=tenant).json()["users"] == []
    assert c.get("/v1/feed", headers=tenant).json()["memories"] == []
    assert c.get("/v1/users/u/sessions", headers=tenant).status_code == 404
    r = c.get(f"/v1/memories/{KEPT.id}/details", params={"user_id": "u"}, headers=tenant)
    assert r.status_code == 404
    assert c.get("/v1/jobs", headers=tenant).json()["jobs"] == []
    r = c.post("/v1/generations/1/activate", headers=tenant)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_only")
    # A user the tenant writes is listed under the id the tenant gave it.
    asyncio.run(_tenant_user(c.app.dependency_overrides[services_module.services]()))
    [u] = c.get("/v1/users", headers=tenant).json()["users"]
    assert u["user_id"] == "ann"
    [m] = c.get("/v1/feed", headers=tenant).json()["memories"]
    assert m["user_id"] == "ann"
    [job] = c.get("/v1/jobs", headers=tenant).json()["jobs"]
    assert (job["kind"], job["user_id"]) == ("link", "ann")
    assert "ann" not in {x["user_id"] for x in c.get("/v1/users").json()["users"]}


def test_every_viewer_route_needs_a_key(viewer):
    c, _ = viewer
    for method, path in (("GET", "/v1/users"), ("GET", "/v1/users/u/sessions"),
                         ("GET", "/v1/sessions/s/messages?user_id=u"), ("GET", "/v1/feed"),
                         ("GET", f"/v1/memories/{KEPT.id}/details?user_id=u"),
                         ("GET", "/v1/users/u/tombstones"), ("GET", "/v1/jobs"),
                         ("GET", "/v1/users/u/memories-over-time"),
                         ("POST", "/v1/generations/1/activate")):  # fmt: skip
        for headers in ({"Authorization": ""}, bearer("ms_not-a-key")):
            r = c.request(method, path, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert set(r.json()["error"]) >= {"code", "message"}
    assert c.get("/ui/", headers={"Authorization": ""}).status_code == 200  # the pages


async def _tenant_user(svc: Services) -> None:
    """User ann of tenant acme with one memory, written as the API writes it (scoped id)."""
    pool = await create_pool(svc.settings.pg_dsn, 1, 1)
    try:
        await Repository(pool).add_messages("acme/ann", "s", [msg("a1")], None)
        await pool.execute(
            "INSERT INTO memory_entries (id, user_id, session_id, text, index_text, ts, weekday,"
            " source_message_ids, embedding_model) VALUES (gen_random_uuid(), 'acme/ann', 's',"
            " 'x', 'x', now(), 'Sat', '{a1}', 'm')"
        )
        await jobs_repo.create_job_async(pool, "link", "acme/ann", {})
    finally:
        await pool.close()
