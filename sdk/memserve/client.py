"""`MemoryClient` and `AsyncMemoryClient`: the whole HTTP API v1 as typed Python calls.

Both clients take the service URL and API key from their arguments or from `MEMSERVE_URL` /
`MEMSERVE_API_KEY`, send the key as `Authorization: Bearer <key>`, validate requests with the
server's own models before sending, retry 429/503 answers (honouring `Retry-After`) and raise a
`memserve.errors.MemserveError` subclass for every failure.

The retry loop is written out here rather than taken from a retry library: the rule (which
errors, how long) is one pure function, `Retry.delay`, shared by the sync and async loops.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from memserve import __version__
from memserve import _calls as calls
from memserve._calls import DEFAULT_URL, Call, Messages, Retry
from memserve.errors import ConnectionFailed, MemserveError, error_for
from memserve.models import (
    AddMemoriesResponse,
    AuditEntry,
    AuditList,
    Deleted,
    JobStatus,
    KeyCreated,
    KeyInfo,
    Memory,
    MemoryList,
    SearchFilters,
    SearchResponse,
    SessionStatus,
)
from memserve.results import Accepted, Generations

T = TypeVar("T")

# Adding with wait=true answers once the messages are searchable (the service waits up to
# 60 s by default), so reads get more time than connects.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The service URL and key: the arguments, else MEMSERVE_URL / MEMSERVE_API_KEY."""
    url = url or os.environ.get("MEMSERVE_URL") or DEFAULT_URL
    api_key = api_key or os.environ.get("MEMSERVE_API_KEY") or None
    return url.rstrip("/"), api_key


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"user-agent": f"memserve-sdk/{__version__}", "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    headers.update(extra or {})
    return headers


def _transport_error(e: httpx.TransportError, url: str) -> ConnectionFailed:
    if isinstance(e, httpx.ConnectError):
        return ConnectionFailed(f"cannot reach {url}: {e}", code="connect_failed")
    if isinstance(e, httpx.TimeoutException):
        return ConnectionFailed(f"no answer from {url} in time: {e!r}", code="timeout")
    return ConnectionFailed(f"transport error talking to {url}: {e!r}", code="transport_error")


def _result(call: Call[T], r: httpx.Response) -> T:
    try:
        body = r.json() if r.content else None
    except ValueError:
        body = None
    if r.is_success:
        try:
            return call.read(body)
        except (ValidationError, KeyError, TypeError) as e:
            raise MemserveError(
                f"unexpected answer to {call.method} {call.path}: {e}",
                status=r.status_code,
                code="bad_response",
            ) from None
    retry_after = calls.retry_after_seconds(r.headers.get("retry-after"))
    raise error_for(r.status_code, body, retry_after, fallback=r.text[:300])


class _Base:
    def __init__(self, url: str | None, api_key: str | None, retry: Retry | None) -> None:
        self.url, self.api_key = resolve(url, api_key)
        self.retry = retry or Retry()


class MemoryClient(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, retry)
        self._http = httpx.Client(
            base_url=self.url,
            headers=_headers(self.api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    r = self._http.request(
                        call.method, call.path, params=call.params, json=call.json
                    )
                except httpx.TransportError as e:
                    raise _transport_error(e, self.url) from e
                return _result(call, r)
            except MemserveError as e:
                delay = self.retry.delay(e, call, attempt)
                if delay is None:
                    raise
                time.sleep(delay)

    # memories
    def add(
        self,
        messages: Messages,
        *,
        user_id: str,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait: bool = False,
        flush: bool = False,
    ) -> AddMemoriesResponse:
        """Store messages (a string is one user message). Ids are made here when not given,
        so a retried add never stores a message twice. `wait`: answer once searchable."""
        return self._run(calls.add(messages, user_id, session_id, metadata, wait, flush))

    def search(
        self,
        query: str,
        *,
        user_id: str,
        limit: int | None = None,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        strategy: str | None = None,
        expand_links: bool = False,
    ) -> SearchResponse:
        return self._run(calls.search(query, user_id, limit, filters, strategy, expand_links))

    def get(self, memory_id: str, *, user_id: str) -> Memory:
        return self._run(calls.get(memory_id, user_id))

    def list_page(
        self,
        *,
        user_id: str,
        session_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> MemoryList:
        return self._run(calls.list_page(user_id, session_id, limit, cursor))

    def list(
        self, *, user_id: str, session_id: str | None = None, page_size: int = 100
    ) -> Iterator[Memory]:
        """Every memory of the user (or of one session), oldest first, page by page."""
        cursor = None
        while True:
            page = self.list_page(
                user_id=user_id, session_id=session_id, limit=page_size, cursor=cursor
            )
            yield from page.memories
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def update(
        self,
        memory_id: str,
        *,
        user_id: str,
        memory: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
    ) -> Memory:
        return self._run(calls.update(memory_id, user_id, memory, metadata, importance))

    def delete(self, memory_id: str, *, user_id: str) -> Deleted:
        return self._run(calls.delete(memory_id, user_id))

    def delete_user(self, user_id: str) -> Deleted:
        """Erase everything of the user in both stores."""
        return self._run(calls.delete_user(user_id))

    # sessions
    def session(self, session_id: str, *, user_id: str) -> SessionStatus:
        return self._run(calls.session(session_id, user_id))

    def flush(self, session_id: str, *, user_id: str) -> Accepted:
        """Turn the session's buffered messages into memories now."""
        return self._run(calls.session_action(session_id, user_id, "flush"))

    def summarize(self, session_id: str, *, user_id: str) -> Accepted:
        """Flush the session and make its summary (needs an LLM backend)."""
        return self._run(calls.session_action(session_id, user_id, "summary"))

    def retry_failed(self, session_id: str, *, user_id: str) -> Accepted:
        """Queue the session's failed LLM extractions again."""
        return self._run(calls.session_action(session_id, user_id, "retry"))

    # jobs and index generations
    def start_job(
        self, kind: str, *, user_id: str | None = None, job_id: str | None = None, **params: Any
    ) -> JobStatus:
        return self._run(calls.start_job(kind, user_id, job_id, params))

    def job(self, job_id: str) -> JobStatus:
        return self._run(calls.job(job_id))

    def generations(self) -> Generations:
        return self._run(calls.generations())

    # keys and audit
    def create_key(
        self,
        tenant: str,
        name: str,
        *,
        expires_at: datetime | str | None = None,
        rate_limit_per_min: int | None = None,
    ) -> KeyCreated:
        return self._run(calls.create_key(tenant, name, expires_at, rate_limit_per_min))

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        return self._run(calls.list_keys(tenant))

    def revoke_key(self, key_id: str) -> KeyInfo:
        return self._run(calls.revoke_key(key_id))

    def audit(
        self,
        *,
        user_id: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        after: int | None = None,
        tenant: str | None = None,
    ) -> AuditList:
        """One page of the audit log, oldest first (`after`: the previous page's next_after)."""
        return self._run(calls.audit(user_id, since, limit, after, tenant))

    def audit_entries(
        self,
        *,
        user_id: str | None = None,
        since: datetime | str | None = None,
        tenant: str | None = None,
    ) -> Iterator[AuditEntry]:
        """Every audit entry, page by page."""
        after = None
        while True:
            page = self.audit(user_id=user_id, since=since, after=after, tenant=tenant)
            yield from page.entries
            if page.next_after is None:
                return
            after = page.next_after

    def health(self) -> dict[str, Any]:
        """GET /readyz: the service and every replica group answer."""
        return self._run(calls.health())


class AsyncMemoryClient(_Base):
    """asyncio client: the same calls as `MemoryClient`, awaited."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, retry)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=_headers(self.api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    r = await self._http.request(
                        call.method, call.path, params=call.params, json=call.json
                    )
                except httpx.TransportError as e:
                    raise _transport_error(e, self.url) from e
                return _result(call, r)
            except MemserveError as e:
                delay = self.retry.delay(e, call, attempt)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    # memories
    async def add(
        self,
        messages: Messages,
        *,
        user_id: str,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait: bool = False,
        flush: bool = False,
    ) -> AddMemoriesResponse:
        return await self._run(calls.add(messages, user_id, session_id, metadata, wait, flush))

    async def search(
        self,
        query: str,
        *,
        user_id: str,
        limit: int | None = None,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        strategy: str | None = None,
        expand_links: bool = False,
    ) -> SearchResponse:
        return await self._run(calls.search(query, user_id, limit, filters, strategy, expand_links))

    async def get(self, memory_id: str, *, user_id: str) -> Memory:
        return await self._run(calls.get(memory_id, user_id))

    async def list_page(
        self,
        *,
        user_id: str,
        session_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> MemoryList:
        return await self._run(calls.list_page(user_id, session_id, limit, cursor))

    async def list(
        self, *, user_id: str, session_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Memory]:
        cursor = None
        while True:
            page = await self.list_page(
                user_id=user_id, session_id=session_id, limit=page_size, cursor=cursor
            )
            for m in page.memories:
                yield m
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def update(
        self,
        memory_id: str,
        *,
        user_id: str,
        memory: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
    ) -> Memory:
        return await self._run(calls.update(memory_id, user_id, memory, metadata, importance))

    async def delete(self, memory_id: str, *, user_id: str) -> Deleted:
        return await self._run(calls.delete(memory_id, user_id))

    async def delete_user(self, user_id: str) -> Deleted:
        return await self._run(calls.delete_user(user_id))

    # sessions
    async def session(self, session_id: str, *, user_id: str) -> SessionStatus:
        return await self._run(calls.session(session_id, user_id))

    async def flush(self, session_id: str, *, user_id: str) -> Accepted:
        return await self._run(calls.session_action(session_id, user_id, "flush"))

    async def summarize(self, session_id: str, *, user_id: str) -> Accepted:
        return await self._run(calls.session_action(session_id, user_id, "summary"))

    async def retry_failed(self, session_id: str, *, user_id: str) -> Accepted:
        return await self._run(calls.session_action(session_id, user_id, "retry"))

    # jobs and index generations
    async def start_job(
        self, kind: str, *, user_id: str | None = None, job_id: str | None = None, **params: Any
    ) -> JobStatus:
        return await self._run(calls.start_job(kind, user_id, job_id, params))

    async def job(self, job_id: str) -> JobStatus:
        return await self._run(calls.job(job_id))

    async def generations(self) -> Generations:
        return await self._run(calls.generations())

    # keys and audit
    async def create_key(
        self,
        tenant: str,
        name: str,
        *,
        expires_at: datetime | str | None = None,
        rate_limit_per_min: int | None = None,
    ) -> KeyCreated:
        return await self._run(calls.create_key(tenant, name, expires_at, rate_limit_per_min))

    async def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        return await self._run(calls.list_keys(tenant))

    async def revoke_key(self, key_id: str) -> KeyInfo:
        return await self._run(calls.revoke_key(key_id))

    async def audit(
        self,
        *,
        user_id: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        after: int | None = None,
        tenant: str | None = None,
    ) -> AuditList:
        return await self._run(calls.audit(user_id, since, limit, after, tenant))

    async def audit_entries(
        self,
        *,
        user_id: str | None = None,
        since: datetime | str | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[AuditEntry]:
        after = None
        while True:
            page = await self.audit(user_id=user_id, since=since, after=after, tenant=tenant)
            for entry in page.entries:
                yield entry
            if page.next_after is None:
                return
            after = page.next_after

    async def health(self) -> dict[str, Any]:
        return await self._run(calls.health())
