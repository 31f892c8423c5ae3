from __future__ import annotations

import asyncio

import pytest

from serve_app.llm.base import (
    LLMBackendDown,
    LLMRequestRejected,
    LLMTransientError,
    ParseError,
)
from serve_app.llm.breaker import BreakerState
from serve_app.llm.resilience import (
    LLMOutputInvalid,
    LLMUnavailable,
    ResilientLLM,
    RetryPolicy,
)
from serve_app.llm.scripted import Fail, Reply, ScriptedBackend
from tests.unit.llm.helpers import FakeClock, RecordingSleep, words

SCHEMA = {"type": "object"}
MSGS = [{"role": "user", "content": "hello there"}]


def parse_ok(text: str) -> str:
    if not text.startswith("ok"):
        raise ParseError(f"expected ok, got {text!r}")
    return text


def scripted(*script, name="a", **kw) -> ScriptedBackend:
    return ScriptedBackend(list(script), name=name, model=f"{name}-model", count_tokens=words, **kw)


async def call(llm: ResilientLLM):
    return await llm.call(MSGS, SCHEMA, parse_ok, max_tokens=50)


async def test_transient_errors_are_retried_with_backoff_2_4_8():
    sleep = RecordingSleep()
    backend = scripted(*[LLMTransientError("503")] * 3, "ok")
    llm = ResilientLLM([backend], sleep=sleep, failure_threshold=10)
    result = await call(llm)
    assert result.value == "ok"
    assert sleep.delays == [2.0, 4.0, 8.0]
    assert len(backend.calls) == 4
    c = result.usage.counters("a", "a-model")
    assert (c.calls, c.ok, c.transient_errors) == (4, 1, 3)


async def test_retries_exhausted_on_the_only_backend_means_unavailable():
    sleep = RecordingSleep()
    backend = scripted(*[LLMTransientError("down")] * 4)
    llm = ResilientLLM([backend], sleep=sleep, failure_threshold=10)
    with pytest.raises(LLMUnavailable) as exc:
        await call(llm)
    assert sleep.delays == [2.0, 4.0, 8.0]
    assert len(backend.calls) == 4
    assert exc.value.usage.counters("a", "a-model").transient_errors == 4
    assert "after 4 attempts" in str(exc.value)


async def test_timeout_counts_as_transient():
    backend = scripted(Reply("ok late", delay_s=5), "ok")
    llm = ResilientLLM([backend], policy=RetryPolicy(timeout_s=0.05), sleep=RecordingSleep())
    result = await call(llm)
    assert result.value == "ok"
    c = result.usage.counters("a", "a-model")
    assert (c.timeouts, c.transient_errors, c.calls) == (1, 1, 2)
    assert backend.calls[0].timeout_s == 0.05


async def test_unexpected_client_errors_are_treated_as_transient():
    llm = ResilientLLM([scripted(RuntimeError("boom"), "ok")], sleep=RecordingSleep())
    assert (await call(llm)).value == "ok"


async def test_fallback_to_the_next_backend_when_the_first_is_unreachable():
    sleep = RecordingSleep()
    a = scripted(*[LLMTransientError("down")] * 4, name="a")
    b = scripted("ok from b", name="b")
    llm = ResilientLLM([a, b], sleep=sleep, failure_threshold=10)
    result = await call(llm)
    assert result.value == "ok from b"
    assert result.reply.backend == "b"
    assert len(a.calls) == 4 and len(b.calls) == 1
    assert {k: v.calls for k, v in result.usage.by_model.items()} == {
        ("a", "a-model"): 4,
        ("b", "b-model"): 1,
    }


async def test_backend_down_is_not_retried_and_opens_its_breaker():
    sleep = RecordingSleep()
    a = scripted(LLMBackendDown("401 bad key"), name="a")
    b = scripted("ok", "ok", name="b")
    llm = ResilientLLM([a, b], sleep=sleep)
    assert (await call(llm)).reply.backend == "b"
    assert sleep.delays == []
    assert llm.breaker("a").state is BreakerState.OPEN
    assert (await call(llm)).reply.backend == "b"
    assert len(a.calls) == 1  # skipped while open


async def test_rejected_request_goes_to_the_next_backend_without_retry():
    a = scripted(LLMRequestRejected("context too long"), name="a")
    b = scripted("ok", name="b")
    llm = ResilientLLM([a, b], sleep=RecordingSleep())
    result = await call(llm)
    assert result.reply.backend == "b"
    assert result.usage.counters("a", "a-model").rejected == 1
    assert llm.breaker("a").state is BreakerState.CLOSED


async def test_rejected_everywhere_is_invalid_output_not_unavailable():
    llm = ResilientLLM([scripted(LLMRequestRejected("too long"))], sleep=RecordingSleep())
    with pytest.raises(LLMOutputInvalid):
        await call(llm)


async def test_invalid_output_on_first_backend_falls_back_to_second():
    a = scripted("bad", "still bad", name="a")
    b = scripted("ok b", name="b")
    llm = ResilientLLM([a, b], sleep=RecordingSleep())
    result = await call(llm)
    assert result.value == "ok b"
    assert result.usage.counters("a", "a-model").parse_failures == 2


async def test_one_unreachable_one_unusable_is_invalid_output():
    a = scripted(LLMBackendDown("gone"), name="a")
    b = scripted("bad", "bad again", name="b")
    llm = ResilientLLM([a, b], sleep=RecordingSleep())
    with pytest.raises(LLMOutputInvalid) as exc:
        await call(llm)
    assert "a: " in str(exc.value) and "b: " in str(exc.value)


async def test_breaker_opens_then_half_open_probe_closes_it():
    clock = FakeClock()
    sleep = RecordingSleep()
    backend = scripted(*[LLMTransientError("down")] * 2, "ok")
    llm = ResilientLLM(
        [backend],
        policy=RetryPolicy(backoff_s=(2.0, 4.0, 8.0)),
        failure_threshold=2,
        reset_timeout_s=30,
        sleep=sleep,
        clock=clock,
    )
    with pytest.raises(LLMUnavailable) as exc:
        await call(llm)
    # The breaker opened after 2 failures: no sleeping through the rest of the schedule.
    assert sleep.delays == [2.0]
    assert exc.value.retry_after_s == 30
    assert llm.status()[0]["state"] == "open"

    # While open, calls fail fast without touching the backend: the caller keeps the buffer.
    with pytest.raises(LLMUnavailable):
        await call(llm)
    assert len(backend.calls) == 2

    clock.advance(30)
    assert llm.retry_after_s() == 0
    assert llm.status()[0]["state"] == "half_open"
    assert (await call(llm)).value == "ok"
    assert llm.breaker("a").state is BreakerState.CLOSED


async def test_failed_half_open_probe_reopens_without_retries():
    clock = FakeClock()
    sleep = RecordingSleep()
    backend = scripted(LLMBackendDown("x"), LLMTransientError("still down"), "ok")
    llm = ResilientLLM([backend], reset_timeout_s=10, sleep=sleep, clock=clock)
    with pytest.raises(LLMUnavailable):
        await call(llm)
    clock.advance(10)
    with pytest.raises(LLMUnavailable):
        await call(llm)
    assert sleep.delays == []  # the probe failed: open again, no backoff loop
    assert len(backend.calls) == 2
    assert llm.breaker("a").times_opened == 2


async def test_concurrency_limit_per_backend():
    a = scripted(name="a", default=Reply("ok", delay_s=0.02))
    b = scripted(name="b", default=Reply("ok", delay_s=0.02))
    llm = ResilientLLM([a, b], max_concurrency=[2, 1], sleep=RecordingSleep())
    results = await asyncio.gather(*(call(llm) for _ in range(6)))
    assert all(r.value == "ok" for r in results)
    assert a.max_in_flight == 2
    assert len(a.calls) == 6 and not b.calls

    only_b = ResilientLLM([b], max_concurrency=1, sleep=RecordingSleep())
    await asyncio.gather(*(call(only_b) for _ in range(3)))
    assert b.max_in_flight == 1


async def test_timeout_does_not_include_waiting_for_a_slot():
    backend = scripted(name="a", default=Reply("ok", delay_s=0.05))
    llm = ResilientLLM(
        [backend], max_concurrency=1, policy=RetryPolicy(timeout_s=0.08), sleep=RecordingSleep()
    )
    results = await asyncio.gather(*(call(llm) for _ in range(3)))
    assert len(results) == 3
    assert llm.usage.counters("a", "a-model").timeouts == 0


async def test_process_ledger_accumulates_across_calls_and_failures():
    backend = scripted("ok one", LLMTransientError("x"), "ok two", Fail(LLMBackendDown("y")))
    llm = ResilientLLM([backend], sleep=RecordingSleep(), failure_threshold=10)
    await call(llm)
    await call(llm)
    with pytest.raises(LLMUnavailable):
        await call(llm)
    (row,) = llm.usage.rows()
    assert row["backend"] == "a" and row["model"] == "a-model"
    assert (row["calls"], row["ok"], row["transient_errors"], row["backend_down"]) == (4, 2, 1, 1)
    # words(): "system/user" role + content tokens, +3 per message, +3 priming
    assert row["prompt_tokens"] == 2 * (3 + 1 + 2 + 3)
    assert row["completion_tokens"] == 4
    taken = llm.usage.take()
    assert taken.calls == 4 and llm.usage.calls == 0


def test_constructor_checks():
    with pytest.raises(ValueError):
        ResilientLLM([])
    with pytest.raises(ValueError):
        ResilientLLM([scripted(name="a"), scripted(name="a")])
    with pytest.raises(ValueError):
        ResilientLLM([scripted(name="a")], max_concurrency=[1, 2])
