"""Key checks: the admin key by constant-time comparison of hashes, tenant keys through a
per-process cache with a short TTL over the keys table.

A cached answer (found or not) is reused for `ttl_s` seconds, so a revocation or expiry made
anywhere takes effect on every process within `ttl_s` (the revoking process drops its own entry
at once); a hit costs one SHA-256 and a dict lookup. `last_used_at` is written at most once per
`touch_every_s` per key and process, off the request's path.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from serve_app.security.keys import key_hash, looks_like_key
from serve_app.security.principal import ADMIN_KEY_ID, DEFAULT_TENANT, Principal


@dataclass(frozen=True)
class KeyRecord:
    """A row of the keys table, without its hash."""

    id: str
    tenant: str
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rate_limit_per_min: int | None = None
    last_used_at: datetime | None = None


class AuthError(Exception):
    """The request has no valid key (HTTP 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


Lookup = Callable[[str], Awaitable[KeyRecord | None]]  # by hash
Touch = Callable[[str], Awaitable[None]]  # key id -> last_used_at = now()


class Authenticator:
    def __init__(
        self,
        admin_key: str,
        lookup: Lookup,
        touch: Touch,
        ttl_s: float = 1.0,
        touch_every_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admin_hash = key_hash(admin_key)
        self._lookup = lookup
        self._touch = touch
        self.ttl_s = ttl_s
        self.touch_every_s = touch_every_s
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()

    async def check(self, token: str) -> Principal:
        """The principal of `token`, or AuthError."""
        if not looks_like_key(token):
            raise AuthError("invalid_key", "the bearer token is not a memserve key")
        digest = key_hash(token)
        if hmac.compare_digest(digest, self._admin_hash):
            return Principal(ADMIN_KEY_ID, DEFAULT_TENANT, is_admin=True)
        rec = await self._record(digest)
        if rec is None:
            raise AuthError("invalid_key", "unknown API key")
        now = datetime.now(UTC)
        if rec.revoked_at is not None and rec.revoked_at <= now:
            raise AuthError("revoked_key", "this API key was revoked")
        if rec.expires_at is not None and rec.expires_at <= now:
            raise AuthError("expired_key", "this API key has expired")
        self._maybe_touch(rec.id)
        return Principal(rec.id, rec.tenant, rate_limit_per_min=rec.rate_limit_per_min)

    def forget(self, key_id: str) -> None:
        """Drop the cached answer for key `key_id` (this process revoked it)."""
        for digest, (_, rec) in list(self._cache.items()):
            if rec is not None and rec.id == key_id:
                del self._cache[digest]

    async def _record(self, digest: str) -> KeyRecord | None:
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        rec = await self._lookup(digest)
        self._cache[digest] = (now, rec)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return rec

    def _maybe_touch(self, key_id: str) -> None:
        now = self._clock()
        if now - self._touched.get(key_id, float("-inf")) < self.touch_every_s:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
