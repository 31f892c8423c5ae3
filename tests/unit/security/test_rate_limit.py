"""Per-key token buckets and the Retry-After value."""

from serve_app.security.rate_limit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_minutes_share_then_refill_at_the_rate():
    clock = Clock()
    rl = RateLimiter(60, clock=clock)
    assert [rl.take("k", None) for _ in range(60)] == [0.0] * 60
    wait = rl.take("k", None)
    assert 0.99 <= wait <= 1.0  # one token a second
    clock.t += 1.0
    assert rl.take("k", None) == 0.0
    assert rl.take("other", None) == 0.0  # buckets are per key


def test_per_key_override_and_replica_share():
    clock = Clock()
    rl = RateLimiter(1000, replicas=2, clock=clock)
    assert sum(rl.take("k", 10) == 0.0 for _ in range(10)) == 5
    tiny = RateLimiter(1000, replicas=4, clock=clock)
    # A share below one request still lets one through, then waits for it to refill.
    assert tiny.take("k", 2) == 0.0
    assert tiny.take("k", 2) > 60


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after(0.01) == "1"
    assert retry_after(1.2) == "2"
