"""Benchmark helpers: percentiles, throughput measurement, the load generator, the wait loop."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from benchmarks.common import encode_throughput, percentiles, run_load, wait_processed


def test_percentiles_interpolate_between_samples():
    p = percentiles([float(x) for x in range(1, 101)])  # 1..100
    assert p["n"] == 100
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100.0
    assert p["mean"] == pytest.approx(50.5)


def test_percentiles_of_nothing_are_zero():
    assert percentiles([]) == {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}


def test_encode_throughput_measures_every_batch_size_with_full_batches():
    seen: list[int] = []

    def encode(batch):
        seen.append(len(batch))

    rows = encode_throughput(encode, [f"t{i}" for i in range(10)], [1, 4, 16], min_seconds=0.01)
    assert [r["batch_size"] for r in rows] == [1, 4, 16]
    assert all(r["texts_per_s"] > 0 for r in rows)
    # Batches never exceed the batch size; a batch size above the corpus uses what there is.
    assert max(seen) == 10
    assert 4 in seen and 1 in seen


async def test_run_load_counts_requests_errors_and_server_time(monkeypatch):
    monkeypatch.setenv("MEMSERVE_ADMIN_KEY", "ms_bench-key")
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = request.read()
        if b'"bad"' in body:
            return httpx.Response(404, json={"error": {"code": "unknown_user"}})
        return httpx.Response(200, json={"results": [], "took_ms": 2.5})

    def make(i: int):
        return "POST", "/v1/search", {"user_id": "bad" if i % 5 == 0 else "u", "query": "q"}

    res = await run_load(
        "http://bench.test",
        make,
        concurrency=3,
        requests=20,
        warmup=4,
        transport=httpx.MockTransport(handler),
    )
    assert len(calls) == 24  # warm-up requests are sent but not measured
    assert {c.headers["authorization"] for c in calls} == {"Bearer ms_bench-key"}
    # Measured indices 4..23: 5, 10, 15, 20 are errors.
    assert res.errors == 4
    assert len(res.latencies_ms) == 16
    assert res.server_ms == [2.5] * 16
    s = res.summary()
    assert s["requests"] == 16 and s["concurrency"] == 3
    assert s["server_took_ms"]["p50"] == 2.5


def _sessions_app(
    progress: dict[str, list[int]],
    received: int,
    failed: int = 0,
    polls: list[tuple[str, int]] | None = None,
):
    """GET /v1/sessions/{id}: `processed` walks through progress[id], then stays at the end.

    Each poll's (session, processed) is appended to `polls` when given.
    """

    def handler(request: httpx.Request) -> httpx.Response:
        sid = request.url.path.rsplit("/", 1)[1]
        steps = progress[sid]
        processed = steps.pop(0) if len(steps) > 1 else steps[0]
        if polls is not None:
            polls.append((sid, processed))
        counts = {"received": received, "processed": processed, "pending": received - processed,
                  "failed": failed}  # fmt: skip
        return httpx.Response(200, json={"messages": counts})

    return httpx.MockTransport(handler)


async def test_wait_processed_returns_once_every_session_is_done():
    polls: list[tuple[str, int]] = []
    transport = _sessions_app({"a": [0, 5, 10], "b": [10]}, received=10, polls=polls)
    async with httpx.AsyncClient(base_url="http://bench.test", transport=transport) as client:
        await asyncio.wait_for(
            wait_processed(client, [("u", "a"), ("u", "b")], stall_s=5, poll_s=0), timeout=5
        )
    # "a" is polled until all 10 are processed, then "b" once, and nothing after that.
    assert polls == [("a", 0), ("a", 5), ("a", 10), ("b", 10)]


async def test_wait_processed_gives_up_on_a_stalled_pipeline():
    transport = _sessions_app({"a": [3]}, received=10)
    async with httpx.AsyncClient(base_url="http://bench.test", transport=transport) as client:
        with pytest.raises(TimeoutError, match="3 of 10"):
            await wait_processed(client, [("u", "a")], stall_s=0.05, poll_s=0.01)


async def test_wait_processed_fails_on_failed_messages():
    transport = _sessions_app({"a": [9]}, received=10, failed=1)
    async with httpx.AsyncClient(base_url="http://bench.test", transport=transport) as client:
        with pytest.raises(RuntimeError, match="failed"):
            await wait_processed(client, [("u", "a")], stall_s=5, poll_s=0)
