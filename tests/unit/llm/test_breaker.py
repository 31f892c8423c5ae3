from __future__ import annotations

import pytest

from serve_app.llm.breaker import BreakerState, CircuitBreaker
from tests.unit.llm.helpers import FakeClock


def test_opens_after_consecutive_failures_only():
    b = CircuitBreaker(failure_threshold=3, reset_timeout_s=10, clock=FakeClock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.try_acquire()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.try_acquire()
    assert b.times_opened == 1


def test_half_open_lets_one_probe_through_and_closes_on_success():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=10, clock=clock)
    b.record_failure()
    assert b.retry_after_s() == 10
    clock.advance(9.5)
    assert not b.try_acquire()
    assert b.retry_after_s() == pytest.approx(0.5)
    clock.advance(0.5)
    assert b.state is BreakerState.HALF_OPEN
    assert b.try_acquire()  # the probe
    assert not b.try_acquire()  # only one at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.try_acquire() and b.try_acquire()


def test_failed_probe_reopens_for_a_full_cool_down():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=2, reset_timeout_s=10, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.advance(10)
    assert b.try_acquire()
    b.record_failure()  # one failure in half-open is enough
    assert b.state is BreakerState.OPEN
    assert b.retry_after_s() == 10
    assert b.times_opened == 2


def test_trip_opens_at_once_and_release_frees_the_probe():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=5, reset_timeout_s=1, clock=clock)
    b.trip()
    assert b.state is BreakerState.OPEN
    clock.advance(1)
    assert b.try_acquire()
    b.release()  # e.g. the probe was cancelled: no verdict
    assert b.state is BreakerState.HALF_OPEN
    assert b.try_acquire()


def test_threshold_must_be_positive():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
