"""The HTTP API end to end on the real Serve application."""

import os
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _msgs(*items):
    return [
        {"role": role, "content": text, "message_id": mid, "name": name, "timestamp": ts}
        for mid, role, name, text, ts in items
    ]


DOG = _msgs(
    ("m1", "user", "Alice", "I adopted a golden retriever named Max.", "2023/05/20 (Sat) 10:00"),
    ("m2", "assistant", None, "Lovely! How old is he?", "2023/05/20 (Sat) 10:01"),
    ("m3", "user", "Alice", "He is two. I also started learning the cello.", "2023-05-20T10:02Z"),
)


def _add(client, user, session, messages, **kw):
    return client.post(
        "/v1/memories",
        json={"user_id": user, "session_id": session, "messages": messages, **kw},
    )


def _search(client, user, query, **kw):
    return client.post("/v1/search", json={"user_id": user, "query": query, **kw})


def test_ingest_search_update_delete_erase(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        r = _add(c, user, "s1", DOG, wait=True)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "session_id": "s1",
            "accepted": 3,
            "message_ids": ["m1", "m2", "m3"],
            "pending": 0,
        }

        for strategy in ("hybrid", "embedding", "bm25"):
            r = _search(c, user, "What dog breed did Alice adopt?", strategy=strategy)
            assert r.status_code == 200, r.text
            top = r.json()["results"][0]
            assert "golden retriever" in top["memory"], (strategy, r.json())
            assert top["source_message_ids"] == ["m1"]
            assert top["session_id"] == "s1"
            assert top["timestamp"].startswith("2023-05-20T10:00")
        assert r.json()["took_ms"] >= 0

        r = c.get(f"/v1/sessions/s1?user_id={user}")
        assert r.status_code == 200
        body = r.json()
        assert body["messages"] == {
            "received": 3,
            "processed": 3,
            "pending": 0,
            "buffered": 0,
            "failed": 0,
        }
        assert body["memories"] == 3 and body["tokens"]["raw"] > 10

        listed = c.get(f"/v1/memories?user_id={user}&limit=2").json()
        assert len(listed["memories"]) == 2 and listed["next_cursor"]
        rest = c.get(f"/v1/memories?user_id={user}&cursor={listed['next_cursor']}").json()
        ids = [m["id"] for m in listed["memories"] + rest["memories"]]
        assert len(ids) == len(set(ids)) == 3 and rest["next_cursor"] is None

        cello = next(m for m in listed["memories"] + rest["memories"] if "cello" in m["memory"])
        r = c.patch(
            f"/v1/memories/{cello['id']}?user_id={user}",
            json={"memory": "Alice plays the violin now", "importance": 0.9},
        )
        assert r.status_code == 200, r.text
        assert r.json()["memory"] == "Alice plays the violin now"
        assert r.json()["importance"] == pytest.approx(0.9)
        hits = _search(c, user, "violin", strategy="bm25").json()["results"]
        assert hits and hits[0]["id"] == cello["id"]
        hits = _search(c, user, "which string instrument", strategy="embedding").json()["results"]
        assert hits[0]["id"] == cello["id"]

        r = c.delete(f"/v1/memories/{cello['id']}?user_id={user}")
        assert r.status_code == 200 and r.json() == {"deleted": True, "id": cello["id"]}
        assert c.get(f"/v1/memories/{cello['id']}?user_id={user}").status_code == 404
        assert c.delete(f"/v1/memories/{cello['id']}?user_id={user}").status_code == 404
        for strategy in ("hybrid", "embedding", "bm25"):
            hits = _search(c, user, "violin", strategy=strategy).json()["results"]
            assert cello["id"] not in {h["id"] for h in hits}

        r = c.delete(f"/v1/users/{user}")
        assert r.status_code == 200
        assert _search(c, user, "dog").status_code == 404
        assert c.get(f"/v1/memories?user_id={user}").status_code == 404
        assert c.get(f"/v1/sessions/s1?user_id={user}").status_code == 404
        assert c.delete(f"/v1/users/{user}").status_code == 404


def test_retry_is_idempotent(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        assert _add(c, user, "s", DOG[:2], wait=True).status_code == 200
        r = _add(c, user, "s", DOG, wait=True)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = _add(c, user, "s", DOG, wait=True)
        assert r.json()["accepted"] == 0 and r.json()["message_ids"] == ["m1", "m2", "m3"]
        status = c.get(f"/v1/sessions/s?user_id={user}").json()
        assert status["messages"]["received"] == 3 and status["memories"] == 3


def test_filters(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        _add(c, user, "s1", DOG, wait=True)
        other = _msgs(("k1", "user", "Bob", "My dog Rex likes the beach.", "2024-01-01T09:00Z"))
        _add(c, user, "s2", other, wait=True)
        for strategy in ("hybrid", "embedding", "bm25"):
            only_s2 = _search(c, user, "dog", filters={"session_id": "s2"}, strategy=strategy)
            assert {h["session_id"] for h in only_s2.json()["results"]} == {"s2"}, strategy
            bob = _search(c, user, "dog", filters={"speaker": "bob"}, strategy=strategy)
            assert [h["source_message_ids"] for h in bob.json()["results"]] == [["k1"]]
            # Words of m2 and m3 only, so every strategy finds both; the window leaves out
            # m1 (10:00) and k1 (2024).
            window = _search(
                c,
                user,
                "old cello",
                strategy=strategy,
                filters={"time_from": "2023-05-20T10:00:30Z", "time_to": "2023-12-31"},
            ).json()["results"]
            assert {h["source_message_ids"][0] for h in window} == {"m2", "m3"}, strategy


def test_one_user_cannot_read_another(running):
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        _add(c, a, "s", DOG, wait=True)
        _add(c, b, "s", _msgs(("x", "user", "Bo", "I like tea.", None)), wait=True)
        hits = _search(c, b, "golden retriever dog Max", limit=50).json()["results"]
        assert all("retriever" not in h["memory"] for h in hits)
        mine = c.get(f"/v1/memories?user_id={a}").json()["memories"][0]["id"]
        assert c.get(f"/v1/memories/{mine}?user_id={b}").status_code == 404
        assert c.patch(f"/v1/memories/{mine}?user_id={b}", json={"memory": "x"}).status_code == 404
        assert c.delete(f"/v1/memories/{mine}?user_id={b}").status_code == 404
        assert c.get(f"/v1/memories/{mine}?user_id={a}").status_code == 200


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("post", "/v1/memories", {"user_id": "u", "session_id": "s", "messages": []}, 422, None),
        (
            "post",
            "/v1/memories",
            {
                "user_id": "u",
                "session_id": "s",
                "messages": [{"role": "user", "content": "x", "timestamp": "last tuesday"}],
            },
            422,
            None,
        ),
        ("post", "/v1/search", {"user_id": "nobody-here", "query": "x"}, 404, "unknown_user"),
        ("post", "/v1/search", {"user_id": "u", "query": ""}, 422, None),
        ("get", "/v1/memories?user_id=nobody-here", None, 404, "unknown_user"),
        ("get", "/v1/memories/not-a-uuid?user_id=u", None, 422, "invalid_memory_id"),
        ("get", f"/v1/memories/{uuid.uuid4()}?user_id=u", None, 404, "unknown_memory"),
        ("get", "/v1/memories?user_id=u&cursor=garbage", None, 422, "invalid_cursor"),
        ("get", "/v1/memories?user_id=bad%20id", None, 422, None),
        ("get", "/v1/sessions/none?user_id=u", None, 404, "unknown_session"),
        ("delete", "/v1/users/nobody-here", None, 404, "unknown_user"),
    ],
)
def test_bad_input_gets_a_clear_4xx(running, method, path, body, status, code):
    with running.client() as c:
        r = c.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    if code:
        assert err["code"] == code


def test_malformed_json_and_large_bodies(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        r = c.post(
            "/v1/memories", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        big = [{"role": "user", "content": "y" * 30000, "message_id": f"b{i}"} for i in range(10)]
        r = _add(c, user, "s", big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        # Nothing of the refused request was stored.
        assert c.get(f"/v1/memories?user_id={user}").status_code == 404


def test_restart_keeps_every_memory(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        _add(c, user, "s1", DOG, wait=True)
        before = c.get(f"/v1/memories?user_id={user}").json()["memories"]
    running.restart_app()
    with running.client() as c:
        after = c.get(f"/v1/memories?user_id={user}").json()["memories"]
        assert [m["id"] for m in after] == [m["id"] for m in before]
        hits = _search(c, user, "golden retriever", strategy="embedding").json()["results"]
        assert hits[0]["source_message_ids"] == ["m1"]
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["qdrant"]["ok"]


def test_health_and_docs(running):
    with running.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready"
        assert set(ready["checks"]) >= {
            "postgresql",
            "qdrant",
            "embedder",
            "memory_index",
            "ingest_worker",
        }
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v1/memories", "/v1/search", "/v1/users/{user_id}"} <= set(paths)


def test_search_is_routed_straight_to_the_memory_index(running):
    # The HTTP front sends POST /v1/search to the MemoryIndex's own application (its replica
    # answers it, deployments/apps.py) and every other path to the Ingress's.
    with running.client() as c:
        assert c.get("/-/routes").json() == {"/v1/search": "memserve-index", "/": "memserve"}
        r = c.post("/v1/search", json={"user_id": "nobody-" + uuid.uuid4().hex, "query": "q"})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_user")
        assert r.headers["x-request-id"]


def test_haproxy_answers_its_own_errors_with_memserves_503_page(running):
    """Every node's HAProxy config points its 502/503/504 answers at the 503 page the ingress
    replica installed (a kill of that replica mid-request gives clients a 503 with Retry-After)."""
    from serve_app.serving_env import gateway_error_page

    base = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent
    configs = list(base.glob("*/haproxy.cfg"))
    assert configs, f"no HAProxy config under {base}"
    for cfg in configs:
        pages = {
            line.split()[2]
            for line in cfg.read_text().splitlines()
            if line.strip().startswith("errorfile 50")
        }
        assert pages == {str(cfg.parent / "500.http")}
        assert Path(pages.pop()).read_bytes() == gateway_error_page()
