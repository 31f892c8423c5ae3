"""The MCP server through the `mcp` SDK's own client: over stdio (`memserve mcp`, as desktop
agents launch it) and over streamable HTTP (the service's /mcp)."""

from __future__ import annotations

import os
import sys
import uuid

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.integration

TOOLS = {
    "add_memory",
    "search_memory",
    "list_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
    "session_status",
}


async def _exercise(mcp: Client, user: str) -> None:
    """List tools, add, search, delete: what an agent does with memserve."""
    assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
    added = await mcp.call_tool(
        "add_memory",
        {"content": "My sister Ana lives in Porto and teaches chemistry.", "name": "Bo",
         "user_id": user, "session_id": "chat-1"},
    )  # fmt: skip
    assert not added.is_error, added.content
    assert added.structured_content["accepted"] == 1
    found = await mcp.call_tool("search_memory", {"query": "Where does Ana live?", "user_id": user})
    assert not found.is_error, found.content
    hit = found.structured_content["results"][0]
    assert "Porto" in hit["memory"] and hit["id"] in found.content[0].text
    status = await mcp.call_tool("session_status", {"session_id": "chat-1", "user_id": user})
    assert status.structured_content["messages"]["received"] == 1
    gone = await mcp.call_tool("delete_memory", {"memory_id": hit["id"], "user_id": user})
    assert gone.structured_content == {"deleted": True, "id": hit["id"]}
    again = await mcp.call_tool("get_memory", {"memory_id": hit["id"], "user_id": user})
    assert again.is_error and "unknown_memory" in again.content[0].text


async def test_mcp_over_stdio(running, agent_key):
    user = f"mcp-{uuid.uuid4().hex[:8]}"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memserve.cli", "mcp", "--url", running.url, "--api-key", agent_key],
        env={**os.environ},
    )
    async with Client(params, read_timeout_seconds=120) as mcp:
        await _exercise(mcp, user)


async def test_mcp_over_streamable_http(running, agent_key):
    user = f"mcp-{uuid.uuid4().hex[:8]}"
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {agent_key}"}, timeout=120)
    async with (
        http,
        Client(
            streamable_http_client(f"{running.url}/mcp", http_client=http), read_timeout_seconds=120
        ) as mcp,
    ):
        await _exercise(mcp, user)


def test_mcp_over_http_needs_a_key(running):
    with running.anonymous() as http:
        r = http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_key"
