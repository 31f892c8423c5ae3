"""Every API call as data (method, path, query, body, how to read the answer), built and
validated once for both clients, and the retry rule both clients follow."""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from memserve.errors import ConnectionFailed, InvalidRequest, MemserveError, RateLimited
from memserve.models import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    AuditList,
    Deleted,
    JobRequest,
    JobStatus,
    KeyCreated,
    KeyInfo,
    Memory,
    MemoryList,
    MemoryPatch,
    MessageIn,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SessionStatus,
)
from memserve.results import Accepted, Generations

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_SESSION = "default"
Messages = str | Iterable[Mapping[str, Any] | MessageIn]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    # Sending it twice does no harm: retried after a 503 or a timeout as well as after a 429.
    idempotent: bool = True


@dataclass(frozen=True)
class Retry:
    """Retries of 429 and 503 answers (and of failed connections) with exponential backoff and
    jitter; a `Retry-After` header of the answer is honoured, up to `max_retry_after_s`."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, error: MemserveError, call: Call[Any], attempt: int) -> float | None:
        """Seconds to wait before try `attempt + 1`, or None when `error` is final."""
        if attempt >= self.attempts or not _retryable(error, call):
            return None
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after_s)
        backoff = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return backoff * (0.5 + 0.5 * self.jitter())


NO_RETRY = Retry(attempts=1)


def _retryable(error: MemserveError, call: Call[Any]) -> bool:
    if isinstance(error, RateLimited):  # refused before any work was done
        return True
    if isinstance(error, ConnectionFailed) and error.code == "connect_failed":  # never sent
        return True
    transient = error.status in (502, 503, 504) or isinstance(error, ConnectionFailed)
    return transient and call.idempotent


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate a request on the client with the server's own model: a bad field fails here,
    before anything is sent, with the error the server would give."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in e.errors()
        ]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details)
        raise InvalidRequest(summary, code="invalid_request", details=details) from None


def _body(model: BaseModel) -> dict[str, Any]:
    """The request as JSON, without the fields left unset (the server's defaults apply)."""
    return model.model_dump(mode="json", exclude_unset=True)


def _reader(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _seg(value: str) -> str:
    return quote(value, safe="")


def _message(m: Mapping[str, Any] | MessageIn) -> dict[str, Any]:
    d = m.model_dump(exclude_unset=True) if isinstance(m, MessageIn) else dict(m)
    if not d.get("message_id"):
        # Made here, not on the server: a retried add then repeats the same ids, and the
        # service stores a message id once per user and session.
        d["message_id"] = str(uuid.uuid4())
    return d


def add(
    messages: Messages,
    user_id: str,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    wait: bool = False,
    flush: bool = False,
) -> Call[AddMemoriesResponse]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    data: dict[str, Any] = {
        "user_id": user_id,
        "session_id": session_id or DEFAULT_SESSION,
        "messages": [_message(m) for m in messages],
    }
    if metadata is not None:
        data["metadata"] = dict(metadata)
    if wait:
        data["wait"] = True
    if flush:
        data["flush"] = True
    req = _validated(AddMemoriesRequest, data)
    return Call("POST", "/v1/memories", _reader(AddMemoriesResponse), json=_body(req))


def search(
    query: str,
    user_id: str,
    limit: int | None = None,
    filters: SearchFilters | Mapping[str, Any] | None = None,
    strategy: str | None = None,
    expand_links: bool = False,
) -> Call[SearchResponse]:
    data: dict[str, Any] = {"user_id": user_id, "query": query}
    if limit is not None:
        data["limit"] = limit
    if filters is not None:
        data["filters"] = (
            filters.model_dump(exclude_unset=True)
            if isinstance(filters, SearchFilters)
            else {k: v for k, v in filters.items() if v is not None}
        )
    if strategy is not None:
        data["strategy"] = strategy
    if expand_links:
        data["expand_links"] = True
    req = _validated(SearchRequest, data)
    return Call("POST", "/v1/search", _reader(SearchResponse), json=_body(req))


def get(memory_id: str, user_id: str) -> Call[Memory]:
    return Call(
        "GET", f"/v1/memories/{_seg(memory_id)}", _reader(Memory), params={"user_id": user_id}
    )


def list_page(
    user_id: str, session_id: str | None = None, limit: int = 100, cursor: str | None = None
) -> Call[MemoryList]:
    params: dict[str, Any] = {"user_id": user_id, "limit": limit}
    if session_id is not None:
        params["session_id"] = session_id
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/memories", _reader(MemoryList), params=params)


def update(
    memory_id: str,
    user_id: str,
    memory: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    importance: float | None = None,
) -> Call[Memory]:
    data = {
        k: v
        for k, v in (("memory", memory), ("metadata", metadata), ("importance", importance))
        if v is not None
    }
    patch = _validated(MemoryPatch, data)
    return Call(
        "PATCH",
        f"/v1/memories/{_seg(memory_id)}",
        _reader(Memory),
        params={"user_id": user_id},
        json=_body(patch),
    )


def delete(memory_id: str, user_id: str) -> Call[Deleted]:
    return Call(
        "DELETE", f"/v1/memories/{_seg(memory_id)}", _reader(Deleted), params={"user_id": user_id}
    )


def delete_user(user_id: str) -> Call[Deleted]:
    return Call("DELETE", f"/v1/users/{_seg(user_id)}", _reader(Deleted))


def session(session_id: str, user_id: str) -> Call[SessionStatus]:
    return Call(
        "GET",
        f"/v1/sessions/{_seg(session_id)}",
        _reader(SessionStatus),
        params={"user_id": user_id},
    )


def session_action(session_id: str, user_id: str, action: str) -> Call[Accepted]:
    """POST /v1/sessions/{id}/{flush|summary|retry}: 202 with what was queued."""
    return Call(
        "POST",
        f"/v1/sessions/{_seg(session_id)}/{action}",
        _reader(Accepted),
        params={"user_id": user_id},
        idempotent=action == "flush",
    )


def start_job(kind: str, user_id: str | None, job_id: str | None, params: dict) -> Call[JobStatus]:
    data = {"kind": kind, "user_id": user_id, "job_id": job_id, **params}
    req = _validated(JobRequest, {k: v for k, v in data.items() if v is not None})
    # Resuming names the job; starting one again would start a second job.
    return Call(
        "POST", "/v1/jobs", _reader(JobStatus), json=_body(req), idempotent=job_id is not None
    )


def job(job_id: str) -> Call[JobStatus]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}", _reader(JobStatus))


def generations() -> Call[Generations]:
    return Call("GET", "/v1/generations", _reader(Generations))


def create_key(
    tenant: str,
    name: str,
    expires_at: datetime | str | None = None,
    rate_limit_per_min: int | None = None,
) -> Call[KeyCreated]:
    body: dict[str, Any] = {"tenant": tenant, "name": name}
    if expires_at is not None:
        body["expires_at"] = (
            expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
        )
    if rate_limit_per_min is not None:
        body["rate_limit_per_min"] = rate_limit_per_min
    return Call("POST", "/v1/keys", _reader(KeyCreated), json=body, idempotent=False)


def _keys(body: Any) -> list[KeyInfo]:
    return [KeyInfo.model_validate(k) for k in body["keys"]]


def list_keys(tenant: str | None = None) -> Call[list[KeyInfo]]:
    return Call("GET", "/v1/keys", _keys, params={"tenant": tenant} if tenant else None)


def revoke_key(key_id: str) -> Call[KeyInfo]:
    return Call("DELETE", f"/v1/keys/{_seg(key_id)}", _reader(KeyInfo))


def audit(
    user_id: str | None = None,
    since: datetime | str | None = None,
    limit: int | None = None,
    after: int | None = None,
    tenant: str | None = None,
) -> Call[AuditList]:
    params: dict[str, Any] = {}
    if user_id is not None:
        params["user_id"] = user_id
    if since is not None:
        params["since"] = since.isoformat() if isinstance(since, datetime) else since
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    if tenant is not None:
        params["tenant"] = tenant
    return Call("GET", "/v1/audit", _reader(AuditList), params=params or None)


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/readyz", _json_object)


def _json_object(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {"result": body}
