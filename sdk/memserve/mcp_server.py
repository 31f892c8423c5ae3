"""memserve as an MCP server (the official `mcp` SDK): tools that let a model store, find, read,
correct and forget long-term memories.

Every tool calls the service through `AsyncMemoryClient`, so validation, errors and access
rules are the HTTP API's own. Two transports share these tools:

- stdio, `memserve mcp --url URL --api-key KEY` (what Claude Desktop, Claude Code and Cursor
  launch), one client for the process;
- streamable HTTP at `/mcp` of the service itself (`streamable_http_app`), where each call is
  made with the caller's own `Authorization` header, in process against the service's app.

The user a call acts for: the tool's `user_id` argument, else the `X-Memserve-User-Id` header
(HTTP), else the server's default (`--user-id` / `MEMSERVE_USER_ID`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from memserve import __version__
from memserve.client import AsyncMemoryClient
from memserve.errors import MemserveError
from memserve.models import (
    ID_PATTERN,
    AddMemoriesResponse,
    Deleted,
    Memory,
    MemoryList,
    SearchResponse,
    SessionStatus,
)

USER_HEADER = "x-memserve-user-id"

# Where a tool gets its client: given the request's headers (None on stdio).
ClientSource = Callable[[Mapping[str, str] | None], AbstractAsyncContextManager[AsyncMemoryClient]]

INSTRUCTIONS = """\
memserve is long-term memory for this user. Search it before answering anything that may depend
on earlier conversations (preferences, facts about the user, past events, decisions); store what
is worth remembering after a turn with add_memory. Memories are per user_id; sessions group one
conversation. Correct wrong memories with update_memory and remove them with delete_memory."""

UserId = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
        description="Whose memories. Omit to use the user this server was configured for.",
    ),
]
MemoryId = Annotated[
    str,
    Field(
        min_length=36,
        max_length=36,
        description="A memory's id, as returned by search_memory or list_memories.",
    ),
]
SessionId = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=ID_PATTERN, description="Session id."),
]


class Message(BaseModel):
    role: Literal["user", "assistant", "system", "tool"] = Field(description="Who said it.")
    content: str = Field(min_length=1, max_length=32_000, description="What was said.")
    name: str | None = Field(default=None, max_length=200, description="Speaker's name.")
    timestamp: str | None = Field(
        default=None, description="When it was said, ISO 8601; omitted: now."
    )


def _when(m: Memory) -> str:
    return m.timestamp.strftime("%Y-%m-%d %H:%M")


def _line(m: Memory) -> str:
    score = f" score={m.score:.3f}" if hasattr(m, "score") else ""
    return f"- [{m.id}] ({_when(m)}, session {m.session_id}{score}) {m.memory}"


def _result(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json"),
    )


def build_server(clients: ClientSource, default_user: str | None = None) -> MCPServer:
    """The MCP server with memserve's tools, each calling the service through `clients`."""
    server = MCPServer(
        "memserve", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    def user_of(user_id: str | None, headers: Mapping[str, str] | None) -> str:
        user = user_id or (headers or {}).get(USER_HEADER) or default_user
        if not user:
            raise ToolError("no user_id: pass user_id (this server has no default user configured)")
        return user

    @asynccontextmanager
    async def call(
        ctx: Context,
    ) -> AsyncIterator[tuple[AsyncMemoryClient, Mapping[str, str] | None]]:
        headers = _headers(ctx)
        try:
            async with clients(headers) as client:
                yield client, headers
        except MemserveError as e:
            # The model sees the service's code and message and can correct its call.
            raise ToolError(str(e)) from None

    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(
        description=(
            "Store something worth remembering about the user: a fact they stated, a "
            "preference, a decision, an event, or the turns of a conversation. Give either "
            "`content` (one message) or `messages` (several turns, in order). The text is "
            "kept verbatim with its time and speaker and becomes searchable (wait=true, the "
            "default, returns once it is). Storing the same message_id twice stores it once."
        ),
        annotations=ToolAnnotations(destructiveHint=False, idempotentHint=False),
    )
    async def add_memory(
        ctx: Context,
        content: Annotated[
            str | None,
            Field(default=None, max_length=32_000, description="One message to remember."),
        ] = None,
        messages: Annotated[
            list[Message] | None,
            Field(default=None, max_length=100, description="Several turns, oldest first."),
        ] = None,
        user_id: UserId = None,
        session_id: Annotated[
            str | None,
            Field(
                default=None,
                max_length=128,
                pattern=ID_PATTERN,
                description="Conversation this belongs to; omitted: 'default'.",
            ),
        ] = None,
        role: Annotated[
            Literal["user", "assistant", "system", "tool"],
            Field(description="Who said `content`."),
        ] = "user",
        name: Annotated[
            str | None, Field(default=None, max_length=200, description="Speaker's name.")
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(default=None, description="Key/value tags stored with the memory."),
        ] = None,
        wait: Annotated[bool, Field(description="Return once searchable.")] = True,
    ) -> Annotated[CallToolResult, AddMemoriesResponse]:
        if (content is None) == (messages is None):
            raise ToolError("give exactly one of `content` or `messages`")
        if content is not None:
            items = [{"role": role, "content": content, **({"name": name} if name else {})}]
        else:
            items = [m.model_dump(exclude_none=True) for m in messages or []]
        async with call(ctx) as (client, headers):
            res = await client.add(
                items,
                user_id=user_of(user_id, headers),
                session_id=session_id,
                metadata=metadata,
                wait=wait,
            )
        state = "searchable" if wait and not res.pending else "queued"
        text = f"stored {res.accepted} message(s) in session {res.session_id} ({state})"
        return _result(text, res)

    @server.tool(
        description=(
            "Find the user's memories relevant to a question or topic, best first. Phrase the "
            "query as a question or key words (names, places, dates help). Narrow with "
            "session_id, a time range (ISO 8601) or the speaker. Returns each memory's id, "
            "time, session, score and text."
        ),
        annotations=read_only,
    )
    async def search_memory(
        ctx: Context,
        query: Annotated[
            str, Field(min_length=1, max_length=4000, description="What to look for.")
        ],
        user_id: UserId = None,
        limit: Annotated[int, Field(ge=1, le=50, description="How many memories.")] = 8,
        session_id: Annotated[
            str | None, Field(default=None, pattern=ID_PATTERN, description="Only this session.")
        ] = None,
        time_from: Annotated[
            str | None, Field(default=None, description="Only memories at or after (ISO 8601).")
        ] = None,
        time_to: Annotated[
            str | None, Field(default=None, description="Only memories at or before (ISO 8601).")
        ] = None,
        speaker: Annotated[
            str | None, Field(default=None, max_length=200, description="Only this speaker.")
        ] = None,
    ) -> Annotated[CallToolResult, SearchResponse]:
        filters = {
            k: v
            for k, v in (
                ("session_id", session_id),
                ("time_from", time_from),
                ("time_to", time_to),
                ("speaker", speaker),
            )
            if v is not None
        }
        async with call(ctx) as (client, headers):
            res = await client.search(
                query, user_id=user_of(user_id, headers), limit=limit, filters=filters or None
            )
        if not res.results:
            return _result("no memories match", res)
        lines = [f"{len(res.results)} memories, best first:", *map(_line, res.results)]
        return _result("\n".join(lines), res)

    @server.tool(
        description=(
            "List the user's memories in time order, oldest first, a page at a time (pass "
            "the returned next_cursor to continue). Use it to review what is stored; use "
            "search_memory to find something."
        ),
        annotations=read_only,
    )
    async def list_memories(
        ctx: Context,
        user_id: UserId = None,
        session_id: Annotated[
            str | None, Field(default=None, pattern=ID_PATTERN, description="Only this session.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Page size.")] = 20,
        cursor: Annotated[
            str | None, Field(default=None, max_length=512, description="next_cursor of a page.")
        ] = None,
    ) -> Annotated[CallToolResult, MemoryList]:
        async with call(ctx) as (client, headers):
            page = await client.list_page(
                user_id=user_of(user_id, headers), session_id=session_id, limit=limit, cursor=cursor
            )
        lines = [_line(m) for m in page.memories] or ["no memories"]
        if page.next_cursor:
            lines.append(f"more: next_cursor={page.next_cursor}")
        return _result("\n".join(lines), page)

    @server.tool(description="Read one memory in full by its id.", annotations=read_only)
    async def get_memory(
        ctx: Context, memory_id: MemoryId, user_id: UserId = None
    ) -> Annotated[CallToolResult, Memory]:
        async with call(ctx) as (client, headers):
            m = await client.get(memory_id, user_id=user_of(user_id, headers))
        extra = f"\nmetadata: {json.dumps(m.metadata, ensure_ascii=False)}" if m.metadata else ""
        return _result(_line(m) + extra, m)

    @server.tool(
        description=(
            "Correct a memory: replace its text (it is re-indexed), its metadata, or its "
            "importance (0-1). Use when the user says something stored is wrong or changed."
        ),
        annotations=ToolAnnotations(destructiveHint=True, idempotentHint=True),
    )
    async def update_memory(
        ctx: Context,
        memory_id: MemoryId,
        user_id: UserId = None,
        memory: Annotated[
            str | None,
            Field(default=None, min_length=1, max_length=32_000, description="New text."),
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None, Field(default=None, description="New metadata.")
        ] = None,
        importance: Annotated[
            float | None, Field(default=None, ge=0, le=1, description="0 (trivial) to 1.")
        ] = None,
    ) -> Annotated[CallToolResult, Memory]:
        async with call(ctx) as (client, headers):
            m = await client.update(
                memory_id,
                user_id=user_of(user_id, headers),
                memory=memory,
                metadata=metadata,
                importance=importance,
            )
        return _result("updated " + _line(m)[2:], m)

    @server.tool(
        description=(
            "Forget one memory for good (both stores). Use when the user asks to forget "
            "something or a memory is wrong beyond correcting."
        ),
        annotations=ToolAnnotations(destructiveHint=True, idempotentHint=True),
    )
    async def delete_memory(
        ctx: Context, memory_id: MemoryId, user_id: UserId = None
    ) -> Annotated[CallToolResult, Deleted]:
        async with call(ctx) as (client, headers):
            d = await client.delete(memory_id, user_id=user_of(user_id, headers))
        return _result(f"deleted memory {d.id}", d)

    @server.tool(
        description=(
            "How far a session's messages have been turned into memories: received, "
            "processed, pending and failed messages, memories, and the session summary."
        ),
        annotations=read_only,
    )
    async def session_status(
        ctx: Context, session_id: SessionId, user_id: UserId = None
    ) -> Annotated[CallToolResult, SessionStatus]:
        async with call(ctx) as (client, headers):
            st = await client.session(session_id, user_id=user_of(user_id, headers))
        c = st.messages
        text = (
            f"session {st.session_id}: {c.received} messages received, {c.processed} processed,"
            f" {c.pending} pending, {c.failed} failed; {st.memories} memories"
            + (f"\nsummary: {st.summary}" if st.summary else "")
        )
        return _result(text, st)

    return server


def _headers(ctx: Context) -> Mapping[str, str] | None:
    try:
        return ctx.headers
    except ValueError:  # outside a request
        return None


def run_stdio(
    url: str | None = None, api_key: str | None = None, user_id: str | None = None
) -> None:
    """`memserve mcp`: serve the tools on stdin/stdout against the service at `url`."""
    import anyio

    async def main() -> None:
        async with AsyncMemoryClient(url, api_key) as client:

            @asynccontextmanager
            async def shared(_: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
                yield client

            server = build_server(shared, user_id or os.environ.get("MEMSERVE_USER_ID"))
            await server.run_stdio_async()

    anyio.run(main)


def streamable_http_app(
    server: MCPServer, path: str = "/mcp", host: str = "127.0.0.1"
) -> tuple[ASGIApp, Callable[[], AbstractAsyncContextManager[None]]]:
    """An ASGI app serving `server` over streamable HTTP at `path`, and the context manager that
    must be open while it serves (the SDK's session manager: for the host app's lifespan).

    Stateless and answering in JSON: any replica can take any request, no session to pin.
    `host` is the address the service binds: a loopback one turns on the SDK's DNS-rebinding
    protection (Host and Origin must be local)."""
    app = server.streamable_http_app(
        streamable_http_path=path, stateless_http=True, json_response=True, host=host
    )
    return app, server.session_manager.run
