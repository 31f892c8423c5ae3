"""Circuit breaker per LLM backend: closed -> open after N consecutive failures -> half-open
after a cool-down, where one probe call decides between closed and open again.

Hand-written: the few Python breaker libraries are sync-first or unmaintained, and this one
needs an injectable clock and a visible state for /readyz and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout_s

    def retry_after_s(self) -> float:
        """Seconds until a call may be tried again (0 when one may be tried now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        return 0.0

    def try_acquire(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time is let through."""
        if self._state is BreakerState.OPEN:
            if not self._cooled_down():
                return False
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                return False
            self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def trip(self) -> None:
        """Open now, whatever the count (the backend said it cannot serve anything)."""
        self._probe_in_flight = False
        self._open()

    def release(self) -> None:
        """The call ended with neither verdict (e.g. the request itself was rejected)."""
        self._probe_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self.times_opened += 1
