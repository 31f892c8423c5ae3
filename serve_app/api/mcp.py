"""The MCP server (memserve.mcp_server) served by the service itself at /mcp, over streamable
HTTP, behind the same bearer keys as every data route.

Its tools call this same application in process, through the SDK over an ASGI transport, with
the caller's own `Authorization` header: one code path for the REST routes and the tools
(validation, errors, tenant scoping and rate limits of the caller's key all apply unchanged), no
network hop, no dependence on where the HTTP proxy listens."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from memserve import NO_RETRY, AsyncMemoryClient
from memserve.mcp_server import build_server, streamable_http_app
from serve_app.api.auth import AUTHENTICATED

PATH = "/mcp"
# Forwarded from the MCP request to the calls its tools make.
_FORWARDED = ("authorization", "x-request-id")


class _Delegate(Response):
    """A response that hands the whole exchange (body in, stream out) to another ASGI app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class McpEndpoint:
    """/mcp. The MCP server is built in the application's lifespan, in the serving process: it
    holds keys and locks that cannot travel (pickled) with the app to the Serve replica."""

    def __init__(self, app: Callable[[], ASGIApp], host: str) -> None:
        self._app = app
        self._host = host
        self._handler: ASGIApp | None = None

    def install(self, app: FastAPI) -> None:
        app.add_api_route(
            PATH,
            self.handle,
            methods=["GET", "POST", "DELETE"],
            dependencies=AUTHENTICATED,
            include_in_schema=False,
        )

    @asynccontextmanager
    async def _client(self, headers: Mapping[str, str] | None) -> AsyncIterator[AsyncMemoryClient]:
        forwarded = {k: v for k, v in (headers or {}).items() if k.lower() in _FORWARDED}
        async with AsyncMemoryClient(
            "http://memserve.internal",
            headers=forwarded,
            retry=NO_RETRY,  # the MCP client retries, if anyone does
            transport=httpx.ASGITransport(app=self._app()),
        ) as client:
            yield client

    @asynccontextmanager
    async def lifespan(self, _: object) -> AsyncIterator[None]:
        handler, running = streamable_http_app(build_server(self._client), PATH, self._host)
        async with running():
            self._handler = handler
            try:
                yield
            finally:
                self._handler = None

    async def handle(self, request: Request) -> Response:
        if self._handler is None:
            body = {"error": {"code": "unavailable", "message": "MCP server is not running"}}
            return Response(json.dumps(body), 503, media_type="application/json")
        return _Delegate(self._handler)
