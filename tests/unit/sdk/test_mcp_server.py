"""The MCP tools in process (the `mcp` SDK's own client against the server object), with the
service answered by httpx.MockTransport."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
from mcp import Client

from memserve import AsyncMemoryClient
from memserve.mcp_server import build_server

MID = "8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f"
MEMORY = {
    "id": MID,
    "memory": "Alice: I adopted a golden retriever named Max.",
    "timestamp": "2023-05-20T10:00:00Z",
    "session_id": "s1",
    "source_message_ids": ["m1"],
    "metadata": {"topic": "pets"},
}
SESSION = {
    "session_id": "s1", "user_id": "alice",
    "messages": {"received": 3, "processed": 2, "pending": 1, "failed": 0},
    "memories": 2,
    "tokens": {"raw": 40, "compressed": 0, "llm_input": 0, "llm_output": 0, "llm_calls": 0},
    "summary": None, "metadata": {},
    "created_at": "2023-05-20T10:00:00Z", "updated_at": "2023-05-20T10:05:00Z",
}  # fmt: skip
TOOLS = {
    "add_memory",
    "search_memory",
    "list_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
    "session_status",
}


class Service:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/memories" and request.method == "POST":
            ids = [m["message_id"] for m in json.loads(request.content)["messages"]]
            return httpx.Response(
                200,
                json={"session_id": "s1", "accepted": len(ids), "message_ids": ids, "pending": 0},
            )
        if path == "/v1/search":
            return httpx.Response(200, json={"results": [{**MEMORY, "score": 0.75}], "took_ms": 2})
        if path == "/v1/memories":
            return httpx.Response(200, json={"memories": [MEMORY], "next_cursor": "c2"})
        if path == "/v1/sessions/s1":
            return httpx.Response(200, json=SESSION)
        if path == f"/v1/memories/{MID}" and request.method == "DELETE":
            return httpx.Response(200, json={"deleted": True, "id": MID})
        return httpx.Response(
            404, json={"error": {"code": "unknown_memory", "message": "memory not found"}}
        )


def server_for(service: Service, default_user: str | None = "alice"):
    client = AsyncMemoryClient("http://memserve.test", transport=httpx.MockTransport(service))

    @asynccontextmanager
    async def shared(_headers):
        yield client

    return build_server(shared, default_user)


async def test_tools_are_listed_with_descriptions_and_schemas():
    async with Client(server_for(Service())) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description or "") > 30
        assert "ctx" not in tool.input_schema["properties"]
    assert tools["search_memory"].input_schema["required"] == ["query"]
    assert tools["search_memory"].annotations.read_only_hint is True
    assert tools["delete_memory"].annotations.destructive_hint is True


async def test_add_then_search_then_delete():
    service = Service()
    async with Client(server_for(service)) as mcp:
        added = await mcp.call_tool("add_memory", {"content": "I adopted Max", "name": "Alice"})
        found = await mcp.call_tool(
            "search_memory", {"query": "dog?", "limit": 3, "speaker": "Alice"}
        )
        gone = await mcp.call_tool("delete_memory", {"memory_id": MID, "user_id": "bob"})
    assert not added.is_error and "stored 1 message(s)" in added.content[0].text
    add_body = json.loads(service.requests[0].content)
    assert add_body["user_id"] == "alice" and add_body["wait"] is True
    assert add_body["messages"][0]["name"] == "Alice"
    assert MID in found.content[0].text and "score=0.750" in found.content[0].text
    assert found.structured_content["results"][0]["id"] == MID
    search_body = json.loads(service.requests[1].content)
    assert search_body["limit"] == 3 and search_body["filters"] == {"speaker": "Alice"}
    assert gone.structured_content == {"deleted": True, "id": MID}
    assert service.requests[2].url.params["user_id"] == "bob"


async def test_list_shows_the_next_cursor():
    async with Client(server_for(Service())) as mcp:
        page = await mcp.call_tool("list_memories", {"limit": 1})
    assert "next_cursor=c2" in page.content[0].text
    assert page.structured_content["next_cursor"] == "c2"


async def test_service_errors_and_bad_input_come_back_as_tool_errors():
    service = Service()
    async with Client(server_for(service)) as mcp:
        missing = await mcp.call_tool("get_memory", {"memory_id": "9" * 8 + MID[8:]})
        blank = await mcp.call_tool("search_memory", {"query": ""})
        both = await mcp.call_tool(
            "add_memory", {"content": "x", "messages": [{"role": "user", "content": "y"}]}
        )
    assert missing.is_error and "unknown_memory" in missing.content[0].text
    assert blank.is_error and "query" in blank.content[0].text
    assert both.is_error and "exactly one" in both.content[0].text
    assert len(service.requests) == 1  # the invalid calls never reached the service


async def test_without_a_default_user_the_call_must_name_one():
    async with Client(server_for(Service(), default_user=None)) as mcp:
        res = await mcp.call_tool("search_memory", {"query": "dog?"})
    assert res.is_error and "user_id" in res.content[0].text


async def test_session_status_keeps_the_fields_that_are_null():
    async with Client(server_for(Service())) as mcp:
        st = await mcp.call_tool("session_status", {"session_id": "s1"})
    assert not st.is_error, st.content
    assert "3 messages received, 2 processed, 1 pending" in st.content[0].text
    assert st.structured_content["summary"] is None
