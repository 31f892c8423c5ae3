"""Idle flush: a session that received nothing for `idle_flush_s` gets its buffers flushed.

LightMem's buffers otherwise flush only when full or when a client asks, so the tail of a
conversation that simply stops would stay unsearchable. Which sessions are idle is decided in
PostgreSQL from the stored message times (`BuffersRepo.request_idle_flushes`) and the answer is
a durable flush request, so a restart neither forgets nor repeats it; this class only paces how
often a worker asks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

# Ask at least this often, whatever the idle time: the query is one indexed scan.
MAX_CHECK_INTERVAL_S = 5.0
MIN_CHECK_INTERVAL_S = 0.2


def check_interval(idle_s: float) -> float:
    """How often to look for idle sessions: a quarter of the idle time, within bounds, so a
    session is flushed at most about a quarter of `idle_s` late."""
    return min(max(idle_s / 4, MIN_CHECK_INTERVAL_S), MAX_CHECK_INTERVAL_S)


class IdleFlusher:
    """`request(idle_s)` inserts the flush requests and returns the sessions it asked for."""

    def __init__(
        self,
        request: Callable[[float], Awaitable[list]],
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.idle_s = idle_s
        self.clock = clock
        self.interval_s = check_interval(idle_s)
        self._next = clock()  # the first loop looks at once: idle time survives restarts
        self.requested = 0

    @property
    def enabled(self) -> bool:
        return self.idle_s > 0

    async def maybe_request(self) -> int:
        """Ask for idle sessions' flushes if the interval has passed; how many were asked."""
        if not self.enabled or self.clock() < self._next:
            return 0
        self._next = self.clock() + self.interval_s
        sessions = await self.request(self.idle_s)
        self.requested += len(sessions)
        return len(sessions)
