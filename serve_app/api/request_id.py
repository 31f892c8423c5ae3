"""X-Request-ID: the id of each request, kept in the request's state for the audit log.

Behind Ray Serve every request arrives with one (Serve takes the caller's header or makes one,
and echoes it on the response itself); the caller's id is kept up to 128 characters. A request
without one (the application served on its own) gets a new id, sent back on the response."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_CHARS = 128


def request_id(given: str | None) -> str:
    return given[:MAX_CHARS] if given else uuid.uuid4().hex


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER)
        rid = request_id(given.decode("latin-1").strip() if given else None)
        scope.setdefault("state", {})["request_id"] = rid
        if given:
            # Whoever set the header echoes it (Serve does); a second copy would repeat it.
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        await self.app(scope, receive, with_header)
