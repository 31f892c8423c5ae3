"""The routes of HTTP API v1 over fake replica handles and a fake repository (no Ray, no
database): paths, status codes and error JSON. The real path is tests/integration/test_api.py."""

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from serve_app.api import services as services_module
from serve_app.api.app import create_app
from serve_app.api.pagination import decode_cursor
from serve_app.api.services import Services
from serve_app.security.authenticator import Authenticator, KeyRecord
from serve_app.security.keys import key_hash, new_key
from serve_app.security.principal import scoped_user
from serve_app.settings import Settings
from serve_app.storage import health

T0 = datetime(2023, 5, 20, 10, tzinfo=UTC)
MID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
ADMIN_KEY = new_key()
TENANT_KEY = new_key()
TENANT = KeyRecord("0b4e28ba-2fa1-11d2-883f-0016d3cca427", "acme", "app", T0)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def fake_authenticator() -> Authenticator:
    """The real checks over a one-key table: TENANT_KEY belongs to tenant acme."""

    async def lookup(digest: str) -> KeyRecord | None:
        return TENANT if digest == key_hash(TENANT_KEY) else None

    async def touch(key_id: str) -> None:
        return None

    return Authenticator(ADMIN_KEY, lookup, touch)


def row(i: int, **kw) -> dict:
    return {
        "id": f"{MID[:-2]}{i:02d}", "text": f"memory {i}", "ts": T0, "session_id": "s",
        "source_message_ids": [f"m{i}"], "metadata": {}, "speaker": "Alice", "kind": "message",
        "importance": None, "created_at": T0, "updated_at": T0, **kw,
    }  # fmt: skip


class Answer:
    """What a Serve handle's .remote() returns: something to await."""

    def __init__(self, value) -> None:
        self.value = value

    def __await__(self):
        async def value():
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

        return value().__await__()


class Handle:
    """A fake deployment handle: method -> function of the call's arguments."""

    def __init__(self, **methods) -> None:
        self.calls: list[tuple] = []
        for name, fn in methods.items():
            setattr(self, name, self._method(name, fn))

    def _method(self, name, fn):
        handle = self

        class Method:
            def remote(self, *args, **kw):
                handle.calls.append((name, args, kw))
                return Answer(fn(*args, **kw))

        return Method()


class FakeRepo:
    pool = object()

    async def user_exists(self, user_id: str) -> bool:
        return user_id == "u"

    async def get_memory(self, user_id, memory_id):
        return row(1) if user_id == "u" else None

    async def list_memories(self, user_id, session_id, limit, after):
        return [row(i) for i in range(min(limit, 3))]


@pytest.fixture
def client(monkeypatch):
    async def repo():
        return FakeRepo()

    memory_index = Handle(
        search=lambda user, q, limit, filters, strategy, expand_links=False: (
            None if user != "u" else {"results": [row(1, score=0.5)], "took_ms": 1.5}
        ),
        update_memory=lambda user, mid, patch, audit=None: (
            row(1, text=patch["memory"]) if user == "u" else None
        ),
        delete_memory=lambda user, mid, audit=None: user == "u",
        delete_user=lambda user, audit=None: user == "u",
        generation_status=lambda: {"active": 0, "generations": []},
        ready=lambda: {"qdrant": "embedded"},
    )
    worker = Handle(
        summarize=lambda user, s: None if s == "gone" else {"queued": user == "u", "reason": "off"},
        retry_failed=lambda user, s: None if s == "gone" else {"queued": 2},
        flush=lambda user, s: None if s == "gone" else 4,
        ready=lambda: {"compression": {"ok": True}},
    )
    embedder = Handle(info=lambda: {"model": "m"})
    svc = Services(Settings(), memory_index, worker, embedder, auth=fake_authenticator())
    monkeypatch.setattr(svc, "repo", repo)
    monkeypatch.setattr(health, "server_version", lambda pool: Answer({"server_version": "15"}))
    app = create_app(Settings())
    app.dependency_overrides[services_module.services] = lambda: svc
    c = TestClient(app, raise_server_exceptions=False, headers=bearer(ADMIN_KEY))
    c.services = svc  # type: ignore[attr-defined]  # for tests that change limits
    return c, memory_index, worker


def test_search_answers_scored_memories_or_404(client):
    c, memory_index, _ = client
    r = c.post("/v1/search", json={"user_id": "u", "query": "dog"})
    assert r.status_code == 200
    [hit] = r.json()["results"]
    assert (hit["memory"], hit["score"], hit["linked"]) == ("memory 1", 0.5, None)
    assert memory_index.calls[-1] == ("search", ("u", "dog", 10, {}, "hybrid"), {})
    r = c.post("/v1/search", json={"user_id": "v", "query": "dog", "expand_links": True})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_user"
    assert memory_index.calls[-1][2] == {"expand_links": True}


def test_memory_routes_check_ids_and_answer_404(client):
    c, _, _ = client
    assert c.get("/v1/memories/not-a-uuid?user_id=u").json()["error"]["code"] == (
        "invalid_memory_id"
    )
    assert c.get(f"/v1/memories/{MID}?user_id=u").json()["memory"] == "memory 1"
    r = c.get(f"/v1/memories/{MID}?user_id=v")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_memory")
    r = c.patch(f"/v1/memories/{MID}?user_id=u", json={"memory": "new"})
    assert (r.status_code, r.json()["memory"]) == (200, "new")
    r = c.patch(f"/v1/memories/{MID}?user_id=v", json={"memory": "new"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_memory")
    assert c.delete(f"/v1/memories/{MID}?user_id=u").json() == {"deleted": True, "id": MID}
    assert c.delete(f"/v1/memories/{MID}?user_id=v").status_code == 404
    assert c.delete("/v1/users/u").json() == {"deleted": True, "id": "u"}
    assert c.delete("/v1/users/v").json()["error"]["code"] == "unknown_user"
    assert c.get("/v1/memories?user_id=bad%20id").status_code == 422


def test_list_pages_with_a_cursor(client):
    c, _, _ = client
    body = c.get("/v1/memories", params={"user_id": "u", "limit": 2}).json()
    assert [m["memory"] for m in body["memories"]] == ["memory 0", "memory 1"]
    assert decode_cursor(body["next_cursor"]) == (T0, row(1)["id"])
    r = c.get("/v1/memories", params={"user_id": "u", "cursor": "junk!"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_cursor")
    r = c.get("/v1/memories", params={"user_id": "v"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_user")


def test_session_actions(client):
    c, _, _ = client
    r = c.post("/v1/sessions/s/summary?user_id=u")
    assert (r.status_code, r.json()) == (202, {"queued": True, "reason": "off"})
    r = c.post("/v1/sessions/s/summary?user_id=v")
    assert (r.status_code, r.json()["error"]) == (409, {"code": "no_llm", "message": "off"})
    r = c.post("/v1/sessions/gone/summary?user_id=u")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_session")
    assert c.post("/v1/sessions/s/retry?user_id=u").json() == {"queued": 2}
    assert c.post("/v1/sessions/gone/retry?user_id=u").status_code == 404


def test_session_flush_is_accepted_or_404(client):
    c, _, worker = client
    r = c.post("/v1/sessions/s/flush?user_id=u")
    assert (r.status_code, r.json()) == (202, {"flush_upto_seq": 4})
    assert worker.calls[-1] == ("flush", ("u", "s"), {})
    r = c.post("/v1/sessions/gone/flush?user_id=u")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_session")
    assert c.post("/v1/sessions/s/flush").status_code == 422
    assert c.post("/v1/sessions/bad%20id/flush?user_id=u").status_code == 422
    # A tenant flushes its own user's session: the stored id carries the tenant.
    r = c.post("/v1/sessions/s/flush?user_id=u", headers=bearer(TENANT_KEY))
    assert r.status_code == 202
    assert worker.calls[-1] == ("flush", (scoped_user("acme", "u"), "s"), {})
    assert c.post("/v1/sessions/s/flush?user_id=u", headers=bearer("nope")).status_code == 401


def test_health_readiness_generations_and_job_ids(client):
    c, _, _ = client
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 200, r.text
    assert "retry-after" not in r.headers
    assert r.json()["checks"]["postgresql"] == {"ok": True, "server_version": "15"}
    assert c.get("/v1/generations").json() == {"active": 0, "generations": []}
    r = c.get("/v1/jobs/not-a-uuid")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_job_id")
    r = c.post("/v1/jobs", json={"kind": "vacuum"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_session_ids_in_paths_follow_the_id_pattern(client):
    c, _, worker = client
    before = len(worker.calls)
    for bad in ("bad%20id", "-x", "x" * 129):
        r = c.post(f"/v1/sessions/{bad}/retry?user_id=u")
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), bad
    assert len(worker.calls) == before


def test_not_ready_while_postgresql_is_down_and_says_when_to_retry(client, monkeypatch):
    c, _, _ = client
    monkeypatch.setattr(
        health, "server_version", lambda pool: Answer(ConnectionRefusedError("restarting"))
    )
    r = c.get("/readyz")
    assert (r.status_code, r.headers["retry-after"]) == (503, "1")
    assert r.json()["checks"]["postgresql"] == {
        "ok": False,
        "error": "ConnectionRefusedError: restarting",
    }
