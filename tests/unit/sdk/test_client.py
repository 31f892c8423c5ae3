"""MemoryClient and AsyncMemoryClient against httpx.MockTransport: what goes on the wire, how
answers and errors come back, retries and pagination."""

from __future__ import annotations

import json

import httpx
import pytest

import memserve
from memserve import AsyncMemoryClient, MemoryClient, Retry
from memserve import client as client_module

MEMORY = {
    "id": "8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f",
    "memory": "Alice: I adopted a golden retriever named Max.",
    "timestamp": "2023-05-20T10:00:00Z",
    "session_id": "s1",
    "source_message_ids": ["m1"],
    "metadata": {},
}
FAST = Retry(attempts=4, backoff_s=0.0)


class Recorder:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) if r.content else {} for r in self.requests]


def accepted(request_ids: list[str]) -> httpx.Response:
    return httpx.Response(
        202, json={"session_id": "s1", "accepted": len(request_ids), "message_ids": request_ids}
    )


def sync_client(handler: Recorder, **kw) -> MemoryClient:
    kw.setdefault("retry", FAST)
    return MemoryClient("http://memserve.test", "k-1", transport=httpx.MockTransport(handler), **kw)


def test_add_makes_message_ids_and_sends_the_key():
    rec = Recorder(accepted(["a", "b"]))
    with sync_client(rec) as c:
        out = c.add(
            [
                {"role": "user", "content": "hi", "message_id": "given"},
                {"role": "assistant", "content": "hello", "timestamp": "2023/05/20 (Sat) 10:00"},
            ],
            user_id="alice",
            session_id="s1",
            wait=True,
        )
    assert out.accepted == 2
    (req,) = rec.requests
    assert req.headers["authorization"] == "Bearer k-1"
    body = json.loads(req.content)
    assert body["messages"][0]["message_id"] == "given"
    assert len(body["messages"][1]["message_id"]) == 36  # a UUID made on the client
    assert body["messages"][1]["timestamp"] == "2023-05-20T10:00:00Z"
    assert body["wait"] is True and "flush" not in body and "metadata" not in body


def test_a_string_is_one_user_message_in_the_default_session():
    rec = Recorder(accepted(["x"]))
    with sync_client(rec) as c:
        c.add("I like tea", user_id="alice")
    (body,) = rec.bodies()
    assert body["session_id"] == "default"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [("user", "I like tea")]


def test_retried_add_sends_the_same_message_ids(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    busy = httpx.Response(
        429,
        headers={"retry-after": "2"},
        json={"error": {"code": "rate_limited", "message": "slow down"}},
    )
    down = httpx.Response(503, json={"error": {"code": "unavailable", "message": "replica down"}})
    rec = Recorder(busy, down, accepted(["x"]))
    with sync_client(rec) as c:
        c.add("remember me", user_id="alice")
    ids = [b["messages"][0]["message_id"] for b in rec.bodies()]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert slept[0] == 2.0  # Retry-After honoured
    assert len(slept) == 2


def test_retries_stop_after_the_last_attempt(monkeypatch):
    monkeypatch.setattr(client_module.time, "sleep", lambda _: None)
    rec = Recorder(
        *[httpx.Response(429, json={"error": {"code": "rate_limited", "message": "no"}})] * 3
    )
    with (
        sync_client(rec, retry=Retry(attempts=3, backoff_s=0.0)) as c,
        pytest.raises(memserve.RateLimited) as e,
    ):
        c.search("tea?", user_id="alice")
    assert len(rec.requests) == 3
    assert e.value.status == 429 and e.value.code == "rate_limited"


def test_a_request_that_creates_something_is_not_resent_after_a_503():
    rec = Recorder(httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}}))
    with sync_client(rec) as c, pytest.raises(memserve.ServiceUnavailable):
        c.create_key("acme", "ci")
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, memserve.Unauthorized),
        (403, memserve.Forbidden),
        (404, memserve.NotFound),
        (409, memserve.Conflict),
        (413, memserve.PayloadTooLarge),
        (422, memserve.InvalidRequest),
        (500, memserve.ServerError),
    ],
)
def test_errors_are_typed_and_carry_the_servers_code(status, cls):
    body = {"error": {"code": f"code_{status}", "message": "what went wrong"}}
    rec = Recorder(httpx.Response(status, json=body))
    with sync_client(rec) as c, pytest.raises(cls) as e:
        c.get("8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f", user_id="alice")
    assert isinstance(e.value, memserve.MemserveError)
    assert (e.value.status, e.value.code, e.value.message) == (
        status,
        f"code_{status}",
        "what went wrong",
    )


def test_an_error_without_the_error_json_keeps_the_text():
    rec = Recorder(httpx.Response(502, text="Bad gateway from the proxy"))
    with (
        sync_client(rec, retry=Retry(attempts=1)) as c,
        pytest.raises(memserve.ServiceUnavailable) as e,
    ):
        c.generations()
    assert e.value.code == "http_502" and "Bad gateway" in e.value.message


def test_an_unreachable_service_is_a_connection_error():
    retry = Retry(attempts=2, backoff_s=0.0)
    with (
        MemoryClient("http://127.0.0.1:9", retry=retry) as c,
        pytest.raises(memserve.ConnectionFailed) as e,
    ):
        c.session("s1", user_id="alice")
    assert e.value.status is None and e.value.code == "connect_failed"


def test_invalid_input_fails_before_sending():
    rec = Recorder()
    with sync_client(rec) as c:
        with pytest.raises(memserve.InvalidRequest) as e:
            c.search("   ", user_id="alice")
        assert "query" in e.value.message
        with pytest.raises(memserve.InvalidRequest):
            c.update("8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f", user_id="alice")  # nothing to change
        with pytest.raises(memserve.InvalidRequest):
            c.start_job("reembed")  # needs a model
    assert rec.requests == []


def test_list_follows_the_cursors():
    page1 = {"memories": [MEMORY], "next_cursor": "c1"}
    page2 = {
        "memories": [{**MEMORY, "id": "9b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f"}],
        "next_cursor": None,
    }
    rec = Recorder(httpx.Response(200, json=page1), httpx.Response(200, json=page2))
    with sync_client(rec) as c:
        got = [m.id for m in c.list(user_id="alice", session_id="s1", page_size=1)]
    assert got == [MEMORY["id"], "9b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f"]
    assert [r.url.params.get("cursor") for r in rec.requests] == [None, "c1"]
    assert rec.requests[0].url.params["session_id"] == "s1"


def test_search_filters_and_typed_results():
    answer = {"results": [{**MEMORY, "score": 0.9}], "took_ms": 3.2}
    rec = Recorder(httpx.Response(200, json=answer))
    with sync_client(rec) as c:
        res = c.search(
            "dog?",
            user_id="alice",
            limit=3,
            filters={"session_id": "s1", "time_from": "2023-05-01", "speaker": None},
            strategy="bm25",
        )
    assert res.results[0].score == 0.9 and res.results[0].timestamp.year == 2023
    (body,) = rec.bodies()
    assert body["filters"] == {"session_id": "s1", "time_from": "2023-05-01T00:00:00Z"}
    assert body["strategy"] == "bm25" and body["limit"] == 3


def test_keys_and_audit_follow_their_contract():
    key = {
        "id": "k1",
        "key": "ms_secret",
        "tenant": "acme",
        "name": "ci",
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": None,
        "rate_limit_per_min": 60,
    }
    row = {
        "at": "2026-01-01T00:00:00Z",
        "key_id": "k1",
        "tenant": "acme",
        "user_id": "alice",
        "object_ids": ["m1"],
        "request_id": None,
    }
    rec = Recorder(
        httpx.Response(201, json=key),
        httpx.Response(200, json={"keys": [{k: v for k, v in key.items() if k != "key"}]}),
        httpx.Response(200, json={"entries": [{**row, "id": 1, "action": "add"}], "next_after": 1}),
        httpx.Response(
            200, json={"entries": [{**row, "id": 2, "action": "edit"}], "next_after": None}
        ),
    )
    with sync_client(rec) as c:
        assert c.create_key("acme", "ci", rate_limit_per_min=60).key == "ms_secret"
        assert [k.id for k in c.list_keys("acme")] == ["k1"]
        first, second = list(c.audit_entries(user_id="alice", since="2026-01-01T00:00:00Z"))
    assert (first.action, second.action) == ("add", "edit")
    assert first.object_ids == ["m1"] and first.at.year == 2026
    assert rec.bodies()[0] == {"tenant": "acme", "name": "ci", "rate_limit_per_min": 60}
    assert rec.requests[1].url.params["tenant"] == "acme"
    assert rec.requests[2].url.params["user_id"] == "alice"
    assert "after" not in rec.requests[2].url.params
    assert rec.requests[3].url.params["after"] == "1"


def test_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMSERVE_URL", "http://from-env:9000/")
    monkeypatch.setenv("MEMSERVE_API_KEY", "env-key")
    c = MemoryClient()
    assert (c.url, c.api_key) == ("http://from-env:9000", "env-key")
    c.close()
    monkeypatch.delenv("MEMSERVE_URL")
    monkeypatch.delenv("MEMSERVE_API_KEY")
    c = MemoryClient()
    assert (c.url, c.api_key) == ("http://127.0.0.1:8000", None)
    c.close()


async def test_async_client_retries_and_paginates(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setattr(client_module.asyncio, "sleep", fake_sleep)
    page = {"memories": [MEMORY], "next_cursor": None}
    rec = Recorder(
        httpx.Response(
            503,
            headers={"retry-after": "1"},
            json={"error": {"code": "unavailable", "message": "x"}},
        ),
        accepted(["x"]),
        httpx.Response(200, json=page),
        httpx.Response(404, json={"error": {"code": "unknown_user", "message": "no such user"}}),
    )
    async with AsyncMemoryClient(
        "http://memserve.test", "k-2", retry=FAST, transport=httpx.MockTransport(rec)
    ) as c:
        await c.add(
            [{"role": "user", "content": "hi"}], user_id="alice", session_id="s1", flush=True
        )
        got = [m.id async for m in c.list(user_id="alice")]
        with pytest.raises(memserve.NotFound) as e:
            await c.delete_user("bob")
    assert got == [MEMORY["id"]]
    first, second = rec.bodies()[:2]
    assert first == second and first["flush"] is True
    assert slept == [1.0]
    assert e.value.code == "unknown_user"
    assert rec.requests[3].method == "DELETE" and rec.requests[3].url.path == "/v1/users/bob"
