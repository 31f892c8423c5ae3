"""Authentication over the routes (fake handles, the real checks): 401 on every data route
without a key, 403 for tenant keys on admin routes and whole-index jobs, tenant-scoped user ids
in every call, 429 with Retry-After, request ids."""

import re

import pytest

from serve_app.api.app import create_app
from serve_app.security.rate_limit import RateLimiter
from serve_app.settings import Settings
from tests.unit.api.routes.test_routes import MID, TENANT_KEY, bearer, client  # noqa: F401

PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}


def protected_routes() -> list[tuple[str, str]]:
    """Every operation of the API's schema but the public ones, path parameters filled in."""
    out = []
    for path, ops in create_app(Settings()).openapi()["paths"].items():
        if path in PUBLIC:
            continue
        for method in ops:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", MID, path)))
    return out


def test_every_route_but_the_public_ones_needs_a_key(client):  # noqa: F811
    c, memory_index, _ = client
    routes = protected_routes()
    assert ("DELETE", f"/v1/keys/{MID}") in routes and ("GET", "/v1/audit") in routes
    for method, path in routes:
        for auth in ({}, {"Authorization": "Basic x"}, bearer("ms_" + "0" * 43)):
            r = c.request(method, path, headers={"Authorization": ""} | auth)
            assert r.status_code == 401, (method, path, auth)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert set(r.json()["error"]) == {"code", "message"}
    assert memory_index.calls == []
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert c.get(path, headers={"Authorization": ""}).status_code == 200


def test_openapi_declares_the_bearer_scheme_on_protected_operations(client):  # noqa: F811
    c, _, _ = client
    spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for path, ops in spec["paths"].items():
        for op in ops.values():
            expected = [] if path in PUBLIC else [{"ApiKey": []}]
            assert op.get("security", []) == expected, path


def test_tenant_keys_reach_only_their_tenants_users(client):  # noqa: F811
    c, memory_index, worker = client
    t = bearer(TENANT_KEY)
    r = c.post("/v1/search", json={"user_id": "u", "query": "dog"}, headers=t)
    assert (r.status_code, r.json()["error"]["message"]) == (404, "user 'u' has no memories")
    assert memory_index.calls[-1][1][0] == "acme/u"
    assert c.get(f"/v1/memories/{MID}", params={"user_id": "u"}, headers=t).status_code == 404
    r = c.delete(f"/v1/memories/{MID}", params={"user_id": "u"}, headers=t)
    assert r.status_code == 404
    name, args, kw = memory_index.calls[-1]
    assert (name, args[0]) == ("delete_memory", "acme/u")
    assert (kw["audit"].tenant, kw["audit"].user_id, kw["audit"].action) == ("acme", "u", "delete")
    assert c.delete("/v1/users/u", headers=t).json()["error"]["message"] == "user 'u' not found"
    assert memory_index.calls[-1][1] == ("acme/u",)
    c.post("/v1/sessions/s/retry", params={"user_id": "u"}, headers=t)
    assert worker.calls[-1][1] == ("acme/u", "s")


def test_tenant_keys_are_refused_admin_routes_and_whole_index_jobs(client):  # noqa: F811
    c, _, _ = client
    t = bearer(TENANT_KEY)
    for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/generations")):
        r = c.request(method, path, headers=t, json={"tenant": "x", "name": "y"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_only"), path
    for body in ({"kind": "reembed", "model": "m"}, {"kind": "rollback"}, {"kind": "link"}):
        r = c.post("/v1/jobs", json=body, headers=t)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_only"), body
    r = c.get("/v1/audit", params={"tenant": "other"}, headers=t)
    assert r.status_code == 403


def test_rate_limit_is_per_key_with_retry_after_and_spares_the_admin(client):  # noqa: F811
    c, _, _ = client
    c.services.limiter = RateLimiter(2)
    t = bearer(TENANT_KEY)
    codes = [c.get("/v1/memories", params={"user_id": "u"}, headers=t) for _ in range(3)]
    assert [r.status_code for r in codes] == [404, 404, 429]
    assert codes[2].json()["error"]["code"] == "rate_limited"
    assert int(codes[2].headers["retry-after"]) >= 1
    assert all(c.get("/v1/memories?user_id=u").status_code == 200 for _ in range(5))


@pytest.mark.parametrize(("given", "kept"), [("abc-123", "abc-123"), ("x" * 200, "x" * 128)])
def test_request_ids_reach_the_audit(client, given, kept):  # noqa: F811
    c, memory_index, _ = client
    r = c.delete(f"/v1/memories/{MID}?user_id=u", headers={"X-Request-ID": given})
    # Whoever set the header (Serve, in production) echoes it: not sent a second time.
    assert "x-request-id" not in r.headers
    assert memory_index.calls[-1][2]["audit"].request_id == kept


def test_requests_without_an_id_get_one_back(client):  # noqa: F811
    c, memory_index, _ = client
    r = c.delete(f"/v1/memories/{MID}?user_id=u")
    assert r.headers.get_list("x-request-id") == [memory_index.calls[-1][2]["audit"].request_id]
    assert len(c.get("/healthz").headers["x-request-id"]) == 32
