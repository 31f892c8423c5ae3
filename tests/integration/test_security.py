"""Keys, tenants, audit log and rate limits through the real service over HTTP."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

pytestmark = pytest.mark.integration


def new_key(running, tenant: str, **kw) -> dict:
    with running.client() as c:
        r = c.post("/v1/keys", json={"tenant": tenant, "name": f"test {tenant}", **kw})
    assert r.status_code == 201, r.text
    return r.json()


def add(c: httpx.Client, user: str, text: str, session: str = "s") -> httpx.Response:
    r = c.post(
        "/v1/memories",
        json={
            "user_id": user,
            "session_id": session,
            "wait": True,
            "messages": [{"role": "user", "content": text}],
        },
    )
    assert r.status_code == 200, r.text
    return r


def memories(c: httpx.Client, user: str) -> list[dict]:
    r = c.get("/v1/memories", params={"user_id": user})
    return r.json()["memories"] if r.status_code == 200 else []


def test_public_routes_and_401s(running):
    with running.anonymous() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["ApiKey"] == {
            "type": "http",
            "scheme": "bearer",
            "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
        }
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer ms_nope"}):
            r = c.get("/v1/memories", params={"user_id": "u"}, headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] in ("missing_key", "invalid_key")
        unknown = "ms_" + "x" * 43
        r = c.post("/v1/search", json={"user_id": "u", "query": "q"}, headers=_bearer(unknown))
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_key")


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_admin_routes_need_the_admin_key(running):
    a = new_key(running, "acme", rate_limit_per_min=1000)
    assert a["key"].startswith("ms_") and len(a["key"]) >= 43
    with running.client(a["key"]) as c:
        for method, path in (("GET", "/v1/keys"), ("DELETE", f"/v1/keys/{a['id']}")):
            r = c.request(method, path)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_only")
        r = c.post("/v1/keys", json={"tenant": "acme", "name": "more"})
        assert r.status_code == 403
        assert c.get("/v1/generations").status_code == 403
    with running.client() as c:
        listed = c.get("/v1/keys", params={"tenant": "acme"}).json()["keys"]
        assert a["id"] in {k["id"] for k in listed}
        assert all("key" not in k for k in listed)
        assert c.delete(f"/v1/keys/{uuid.uuid4()}").status_code == 404


def test_tenants_never_see_each_other(running):
    a, b = new_key(running, "t-a")["key"], new_key(running, "t-b")["key"]
    with running.client(a) as ca, running.client(b) as cb, running.client() as admin:
        add(ca, "alice", "alice keeps a red bicycle in the garage")
        [mem] = memories(ca, "alice")
        mid = mem["id"]
        hits = ca.post("/v1/search", json={"user_id": "alice", "query": "bicycle"}).json()
        assert [h["id"] for h in hits["results"]] == [mid]
        for c in (cb, admin):  # the admin acts in tenant default
            r = c.post("/v1/search", json={"user_id": "alice", "query": "bicycle"})
            assert (r.status_code, r.json()["error"]["message"]) == (
                404,
                "user 'alice' has no memories",
            )
            assert c.get(f"/v1/memories/{mid}", params={"user_id": "alice"}).status_code == 404
            r = c.patch(f"/v1/memories/{mid}", params={"user_id": "alice"}, json={"memory": "x"})
            assert r.status_code == 404
            assert c.delete(f"/v1/memories/{mid}", params={"user_id": "alice"}).status_code == 404
            assert c.delete("/v1/users/alice").status_code == 404
            assert c.get("/v1/sessions/s", params={"user_id": "alice"}).status_code == 404
        # b's own alice is another user.
        add(cb, "alice", "alice of tenant b likes tea")
        [theirs] = memories(cb, "alice")
        assert theirs["memory"].endswith("alice of tenant b likes tea")
        assert [m["id"] for m in memories(ca, "alice")] == [mid]
        session = ca.get("/v1/sessions/s", params={"user_id": "alice"}).json()
        assert session["user_id"] == "alice"
        assert cb.delete("/v1/users/alice").json() == {"deleted": True, "id": "alice"}
        assert [m["id"] for m in memories(ca, "alice")] == [mid]


def test_jobs_are_privileged_and_tenant_scoped(running):
    a, b = new_key(running, "jobs-a")["key"], new_key(running, "jobs-b")["key"]
    with running.client(a) as ca, running.client(b) as cb:
        for body in (
            {"kind": "reembed", "model": "m"},
            {"kind": "reextract"},
            {"kind": "rollback"},
            {"kind": "link"},
        ):
            r = ca.post("/v1/jobs", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_only"), body
        r = ca.post("/v1/jobs", json={"kind": "link", "user_id": "nobody"})
        assert (r.status_code, r.json()["error"]["message"]) == (
            404,
            "user 'nobody' has no memories",
        )
        add(ca, "carol", "carol plays the cello on sundays")
        started = []
        for _ in range(3):
            r = ca.post("/v1/jobs", json={"kind": "link", "user_id": "carol"})
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "too_many_jobs"
                break
            assert r.status_code == 202, r.text
            started.append(r.json())
        else:
            pytest.fail("a tenant started more jobs than MEMSERVE_TENANT_MAX_JOBS")
        job = started[0]
        assert job["user_id"] == "carol"
        assert ca.get(f"/v1/jobs/{job['id']}").json()["user_id"] == "carol"
        assert cb.get(f"/v1/jobs/{job['id']}").status_code == 404
        r = cb.post("/v1/jobs", json={"kind": "link", "job_id": job["id"]})
        assert r.status_code == 404
        # Let the jobs end before other tests run theirs.
        deadline = time.monotonic() + 300
        for j in started:
            while time.monotonic() < deadline:
                status = ca.get(f"/v1/jobs/{j['id']}").json()["status"]
                if status not in ("pending", "running"):
                    break
                time.sleep(1)


def test_revoked_and_expired_keys_stop_working(running):
    k = new_key(running, "short")
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    e = new_key(running, "short", expires_at=soon)
    with running.client(k["key"]) as c, running.client(e["key"]) as ce:
        assert c.get("/v1/memories", params={"user_id": "x"}).status_code == 404
        assert ce.get("/v1/memories", params={"user_id": "x"}).status_code == 404
        with running.client() as admin:
            revoked = admin.delete(f"/v1/keys/{k['id']}").json()
        assert revoked["revoked_at"] is not None
        t0 = time.monotonic()
        while c.get("/v1/memories", params={"user_id": "x"}).status_code != 401:
            assert time.monotonic() - t0 < 2.5, "revocation took effect after more than 2.5 s"
            time.sleep(0.05)
        r = c.get("/v1/memories", params={"user_id": "x"})
        assert r.json()["error"]["code"] == "revoked_key"
        time.sleep(max(0.0, 3.2 - (time.monotonic() - t0)))
        deadline = time.monotonic() + 3
        while ce.get("/v1/memories", params={"user_id": "x"}).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_audit_log_records_changes_with_request_ids(running):
    a, b = new_key(running, "audit-a"), new_key(running, "audit-b")
    with running.client(a["key"]) as ca, running.client(b["key"]) as cb:
        r = ca.post(
            "/v1/memories",
            headers={"X-Request-ID": "req-add-1"},
            json={
                "user_id": "dave",
                "session_id": "s",
                "wait": True,
                "messages": [
                    {"role": "user", "content": "dave grows tomatoes", "message_id": "m1"}
                ],
            },
        )
        assert r.headers.get_list("x-request-id") == ["req-add-1"]
        [mem] = memories(ca, "dave")
        ca.patch(f"/v1/memories/{mem['id']}", params={"user_id": "dave"}, json={"importance": 1})
        ca.delete(f"/v1/memories/{mem['id']}", params={"user_id": "dave"})
        ca.delete("/v1/users/dave")
        rows = ca.get("/v1/audit", params={"user_id": "dave"}).json()["entries"]
        assert [r["action"] for r in rows] == ["add", "edit", "delete", "erase_user"]
        assert rows[0]["object_ids"] == ["m1"] and rows[0]["request_id"] == "req-add-1"
        assert {r["key_id"] for r in rows} == {a["id"]}
        assert {r["tenant"] for r in rows} == {"audit-a"}
        mine = ca.get("/v1/audit").json()["entries"]
        assert {r["tenant"] for r in mine} == {"audit-a"}
        assert "key_create" in {r["action"] for r in mine}
        assert cb.get("/v1/audit", params={"user_id": "dave"}).json()["entries"] == []
        assert cb.get("/v1/audit", params={"tenant": "audit-a"}).status_code == 403
    with running.client() as admin:
        rows = admin.get("/v1/audit", params={"tenant": "audit-a", "user_id": "dave"}).json()
        assert len(rows["entries"]) == 4
        page = admin.get("/v1/audit", params={"limit": 1}).json()
        assert len(page["entries"]) == 1 and page["next_after"] is not None


def test_rate_limit_answers_429_with_retry_after(running):
    k = new_key(running, "slow", rate_limit_per_min=3)
    with running.client(k["key"]) as c:
        codes = [c.get("/v1/memories", params={"user_id": "x"}) for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [404, 404, 404]
    assert codes[3].status_code == 429
    assert int(codes[3].headers["retry-after"]) >= 1


def test_bad_filters_are_422_and_unknown_long_users_404_at_once(running):
    with running.client() as c:
        r = c.post("/v1/search", json={"user_id": "u", "query": "q", "filters": {"time_to": {}}})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
        t0 = time.monotonic()
        r = c.post("/v1/search", json={"user_id": "u" * 127, "query": "q"})
        assert r.status_code == 404
        assert time.monotonic() - t0 < 2
