"""API errors: one JSON shape for every error ({"error": {code, message, details?}}), the
handlers that produce it, and the request body limit (413)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from memserve.models import ErrorResponse

logger = logging.getLogger("ray.serve")

# OpenAPI documentation of the error answers every route may give.
ERRORS = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
}


class ApiError(Exception):
    """An answer other than success: HTTP status, machine-readable code, message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


# A 503 is an outage of a store or a replica group that recovers by itself (PostgreSQL restarted,
# a replica replaced): tell clients when to try again.
RETRY_AFTER_S = 1


def error_response(
    status: int,
    code: str,
    message: str,
    details: list | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


class BodyLimit:
    """Refuse bodies over the limit with 413, by Content-Length or by counting what arrives.
    Paths ending in `/import` (a user's whole export) have their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_import_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_import_bytes = max_import_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (
            self.max_import_bytes if scope.get("path", "").endswith("/import") else self.max_bytes
        )
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_413(send, limit)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _send_413(send, limit)


class _TooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "body_too_large", "message": f"request body exceeds {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_error_handling(
    app: FastAPI, max_body_bytes: int, max_import_bytes: int | None = None
) -> None:
    """The body limit and the handlers that turn every failure into the error JSON."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, max_import_bytes=max_import_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in e.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'] if p != 'body')}: {d['msg']}" for d in details
        )
        return error_response(422, "invalid_request", summary or "invalid request", details)

    # Starlette's, so that routing's own 404 and 405 answer in the same shape (FastAPI's
    # HTTPException is a subclass).
    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> JSONResponse:
        return error_response(
            e.status_code, "http_error", str(e.detail), headers=getattr(e, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        # A store or replica that fails is a server-side outage, not the caller's fault.
        logger.exception("request failed")
        return error_response(
            503, "unavailable", f"service temporarily unavailable: {type(e).__name__}"
        )
