"""/mcp of the application: the `mcp` SDK's client over streamable HTTP (through an ASGI
transport) against the app with fake replica handles; the tools call the app's own routes."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from serve_app.api import services as services_module
from serve_app.api.app import create_app
from serve_app.api.services import Services
from serve_app.settings import Settings
from tests.unit.api.routes.test_routes import TENANT_KEY, Handle, bearer, fake_authenticator

T0 = datetime(2023, 5, 20, 10, tzinfo=UTC)
MID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def row() -> dict:
    return {
        "id": MID, "text": "Alice adopted a dog named Max", "ts": T0, "session_id": "s",
        "source_message_ids": ["m1"], "metadata": {}, "speaker": "Alice", "kind": "message",
        "importance": None, "created_at": T0, "updated_at": T0, "score": 0.7,
    }  # fmt: skip


def app_with_fakes():
    memory_index = Handle(
        search=lambda user, q, limit, filters, strategy: {"results": [row()], "took_ms": 1.0},
        delete_memory=lambda user, mid, audit=None: user == "acme/u",
    )
    svc = Services(Settings(), memory_index, Handle(), Handle(), auth=fake_authenticator())
    app = create_app(Settings())
    app.dependency_overrides[services_module.services] = lambda: svc
    seen: list[dict] = []

    @app.middleware("http")
    async def record(request, call_next):
        if request.url.path.startswith("/v1/"):
            seen.append({"path": request.url.path, "auth": request.headers.get("authorization")})
        return await call_next(request)

    return app, memory_index, seen


async def test_mcp_tools_over_streamable_http_call_the_app_with_the_callers_key():
    app, memory_index, seen = app_with_fakes()
    async with app.router.lifespan_context(app):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            headers=bearer(TENANT_KEY),
        )
        async with (
            http,
            Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as mcp,
        ):
            names = {t.name for t in (await mcp.list_tools()).tools}
            found = await mcp.call_tool("search_memory", {"query": "dog?", "user_id": "u"})
            gone = await mcp.call_tool("delete_memory", {"memory_id": MID, "user_id": "v"})
    assert {"add_memory", "search_memory", "delete_memory", "session_status"} <= names
    assert not found.is_error and "Alice adopted a dog" in found.content[0].text
    # The tools act as the caller: tenant acme's user u.
    assert memory_index.calls[0][:2] == ("search", ("acme/u", "dog?", 8, {}, "hybrid"))
    assert gone.is_error and "unknown_memory" in gone.content[0].text
    assert [s["path"] for s in seen] == ["/v1/search", f"/v1/memories/{MID}"]
    assert all(s["auth"] == f"Bearer {TENANT_KEY}" for s in seen)


async def test_mcp_needs_a_key():
    app, _, _ = app_with_fakes()
    async with app.router.lifespan_context(app):
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        async with http:
            r = await http.post(
                "http://127.0.0.1:8000/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"},
            )
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_key"


async def test_mcp_refuses_a_foreign_host_when_bound_to_loopback():
    app, _, _ = app_with_fakes()
    async with app.router.lifespan_context(app):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), headers=bearer(TENANT_KEY)
        )
        async with http:
            r = await http.post(
                "http://evil.example/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"},
            )
    assert r.status_code in (403, 421)
