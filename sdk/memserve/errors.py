"""Typed errors of the client: one class per kind of failure, each carrying the HTTP status and
the server's machine-readable code and message (`{"error": {"code", "message", "details?"}}`)."""

from __future__ import annotations

from typing import Any


class MemserveError(Exception):
    """Any failure of a memserve call. `status` is None when no HTTP answer came back."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class ConnectionFailed(MemserveError):
    """The service could not be reached, or did not answer in time."""


class BadRequest(MemserveError):
    """400: the request is malformed."""


class Unauthorized(MemserveError):
    """401: no API key, or one the service does not know."""


class Forbidden(MemserveError):
    """403: the key may not do this (another tenant, or an admin-only route)."""


class NotFound(MemserveError):
    """404: unknown user, memory, session, job or key."""


class Conflict(MemserveError):
    """409: the service cannot do this now (for example a summary without an LLM backend)."""


class PayloadTooLarge(MemserveError):
    """413: the body is over the service's limit."""


class InvalidRequest(MemserveError):
    """422: a field is invalid; `details` names it."""


class RateLimited(MemserveError):
    """429: too many requests for this key; `retry_after` says when to try again."""


class ServiceUnavailable(MemserveError):
    """503 (or 502/504): a store or replica group is down; the request may be retried."""


class ServerError(MemserveError):
    """Any other 5xx answer."""


_BY_STATUS: dict[int, type[MemserveError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_for(
    status: int, body: Any, retry_after: float | None = None, fallback: str = ""
) -> MemserveError:
    """The typed error of an HTTP error answer, from the service's error JSON when it is one."""
    code, message, details = f"http_{status}", fallback or f"HTTP {status}", None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        details = err.get("details") if isinstance(err.get("details"), list) else None
    elif isinstance(body, dict) and "detail" in body:  # a plain FastAPI/Starlette answer
        message = str(body["detail"])
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else MemserveError)
    return cls(message, status=status, code=code, details=details, retry_after=retry_after)
