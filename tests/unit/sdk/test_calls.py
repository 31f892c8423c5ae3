"""The retry rule and Retry-After parsing shared by both clients."""

from __future__ import annotations

import email.utils

import pytest

from memserve import _calls as calls
from memserve.errors import ConnectionFailed, NotFound, RateLimited, ServiceUnavailable


def test_retry_after_in_seconds_or_as_a_date():
    assert calls.retry_after_seconds("3") == 3.0
    assert calls.retry_after_seconds("-1") == 0.0
    assert calls.retry_after_seconds(None) is None
    assert calls.retry_after_seconds("soon") is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert calls.retry_after_seconds(date, now=1_000_000) == pytest.approx(10.0)


def test_which_errors_are_retried():
    retry = calls.Retry(attempts=3, backoff_s=1.0, jitter=lambda: 1.0)
    add = calls.add("hi", "alice")
    new_key = calls.create_key("acme", "ci")
    busy = RateLimited("slow", status=429, retry_after=120.0)
    down = ServiceUnavailable("down", status=503)
    assert retry.delay(busy, new_key, 1) == 60.0  # Retry-After capped
    assert retry.delay(down, add, 1) == 1.0
    assert retry.delay(down, add, 2) == 2.0  # exponential
    assert retry.delay(down, add, 3) is None  # attempts spent
    assert retry.delay(down, new_key, 1) is None  # would create a second key
    assert retry.delay(NotFound("no", status=404), add, 1) is None
    never_sent = ConnectionFailed("refused", code="connect_failed")
    assert retry.delay(never_sent, new_key, 1) == 1.0
    assert retry.delay(ConnectionFailed("slow", code="timeout"), new_key, 1) is None


def test_backoff_is_capped_and_jittered():
    retry = calls.Retry(attempts=10, backoff_s=1.0, max_backoff_s=4.0, jitter=lambda: 0.0)
    down = ServiceUnavailable("down", status=503)
    assert retry.delay(down, calls.generations(), 6) == 2.0  # half of the 4 s cap
