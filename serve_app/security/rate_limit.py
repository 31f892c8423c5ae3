"""Per-key token buckets in one process.

Each replica that answers HTTP keeps its own buckets and enforces `limit / replicas` per key,
`replicas` being the size of its group: with Serve spreading a key's requests over the
replicas, a group admits about `limit` a minute, and never more than that, with no shared
state on the request path. Two groups answer HTTP (deployments/apps.py): the MemoryIndex
replicas count a key's searches, the Ingress replicas its other requests, each against the
key's limit. A burst of up to one minute's share is allowed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(
        self,
        default_per_min: int,
        replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.default_per_min = default_per_min
        self.replicas = max(1, replicas)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.max_keys = max_keys

    def take(self, key_id: str, per_min: int | None) -> float:
        """0 when a request of `key_id` may go ahead now (one token taken), else the seconds
        until it may."""
        limit = (per_min or self.default_per_min) / self.replicas
        if limit <= 0:
            return 0.0
        now = self._clock()
        b = self._buckets.get(key_id)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            b = self._buckets[key_id] = _Bucket(max(1.0, limit), now)
        rate = limit / 60.0
        b.tokens = min(max(1.0, limit), b.tokens + (now - b.at) * rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / rate


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
