"""Never lose work, never stall: timeouts, backoff retries, one repair retry, fallback backends,
a circuit breaker and a concurrency limit per backend, and usage accounting.

Outcomes the caller must tell apart:
- a value: some backend replied with output that parsed;
- `LLMUnavailable`: no backend could be reached (all failed transiently or their breakers are
  open). Nothing is wrong with the input: leave the buffer pending and try again later;
- `LLMOutputInvalid`: a backend answered, but nothing usable came back even after showing the
  model its error (or every reachable backend refused the request). Mark the buffer failed, keep
  it, let the user retry it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from serve_app.llm.accounting import LLMUsage
from serve_app.llm.base import (
    ChatMessage,
    LLMBackend,
    LLMBackendDown,
    LLMReply,
    LLMRequestRejected,
    LLMTransientError,
    ParseError,
)
from serve_app.llm.breaker import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")


class LLMUnavailable(Exception):
    """No backend could be reached; `retry_after_s` says when a breaker lets a probe through."""

    def __init__(self, message: str, *, retry_after_s: float, usage: LLMUsage) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.usage = usage


class LLMOutputInvalid(Exception):
    """A backend answered but the output could not be used (after the repair retry)."""

    def __init__(self, message: str, *, usage: LLMUsage, last_text: str | None) -> None:
        super().__init__(message)
        self.usage = usage
        self.last_text = last_text


@dataclass(frozen=True)
class RetryPolicy:
    # Sleeps between attempts on one backend: len(backoff_s) retries after the first try.
    backoff_s: tuple[float, ...] = (2.0, 4.0, 8.0)
    timeout_s: float = 120.0
    repair_attempts: int = 1


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    value: T
    reply: LLMReply  # the reply that parsed
    usage: LLMUsage  # everything this operation spent, on every backend it tried
    calls: int


@dataclass
class _Managed:
    backend: LLMBackend
    breaker: CircuitBreaker
    semaphore: asyncio.Semaphore
    max_concurrency: int
    in_flight: int = 0


class _Unreachable(Exception):
    pass


class _Unusable(Exception):
    def __init__(self, message: str, last_text: str | None) -> None:
        super().__init__(message)
        self.last_text = last_text


def repair_message(error: ParseError, reply: LLMReply) -> ChatMessage:
    hint = ""
    if reply.finish_reason == "length":
        hint = " Your reply was cut off by the length limit: keep it shorter."
    return {
        "role": "user",
        "content": (
            f"Your previous reply could not be used: {error}.{hint} Reply again with only the "
            "corrected JSON object, following the same instructions."
        ),
    }


class ResilientLLM:
    """Calls `backends` in order of preference until one returns output that parses."""

    def __init__(
        self,
        backends: Sequence[LLMBackend],
        *,
        policy: RetryPolicy | None = None,
        max_concurrency: int | Sequence[int] = 4,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        usage: LLMUsage | None = None,
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        limits = (
            [max_concurrency] * len(backends)
            if isinstance(max_concurrency, int)
            else list(max_concurrency)
        )
        if len(limits) != len(backends) or min(limits) < 1:
            raise ValueError("one concurrency limit >= 1 per backend")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self.usage = usage if usage is not None else LLMUsage()
        self._backends = [
            _Managed(
                backend=b,
                breaker=CircuitBreaker(
                    failure_threshold=failure_threshold,
                    reset_timeout_s=reset_timeout_s,
                    clock=clock,
                ),
                semaphore=asyncio.Semaphore(n),
                max_concurrency=n,
            )
            for b, n in zip(backends, limits, strict=True)
        ]

    @property
    def backends(self) -> list[LLMBackend]:
        return [m.backend for m in self._backends]

    def breaker(self, name: str) -> CircuitBreaker:
        for m in self._backends:
            if m.backend.name == name:
                return m.breaker
        raise KeyError(name)

    def status(self) -> list[dict]:
        """Per backend: breaker state and load, for /readyz and session status."""
        return [
            {
                "backend": m.backend.name,
                "model": m.backend.model,
                "state": m.breaker.state.value,
                "retry_after_s": round(m.breaker.retry_after_s(), 3),
                "in_flight": m.in_flight,
                "max_concurrency": m.max_concurrency,
            }
            for m in self._backends
        ]

    def retry_after_s(self) -> float:
        """0 when some backend may be called now; else seconds until the first half-open probe."""
        return min(m.breaker.retry_after_s() for m in self._backends)

    async def call(
        self,
        messages: list[ChatMessage],
        schema: dict,
        parse: Callable[[str], T],
        *,
        max_tokens: int,
        temperature: float = 0.0,
    ) -> LLMResult[T]:
        op_usage = LLMUsage()
        unusable: _Unusable | None = None
        problems: list[str] = []
        try:
            for m in self._backends:
                try:
                    value, reply = await self._call_one(
                        m, messages, schema, parse, max_tokens, temperature, op_usage
                    )
                    return LLMResult(value, reply, op_usage, op_usage.calls)
                except _Unreachable as e:
                    problems.append(f"{m.backend.name}: {e}")
                except _Unusable as e:
                    problems.append(f"{m.backend.name}: {e}")
                    unusable = e
        finally:
            self.usage.merge(op_usage)
        detail = "; ".join(problems)
        if unusable is not None:
            raise LLMOutputInvalid(
                f"no usable output: {detail}", usage=op_usage, last_text=unusable.last_text
            )
        raise LLMUnavailable(
            f"no LLM backend reachable: {detail}",
            retry_after_s=self.retry_after_s(),
            usage=op_usage,
        )

    async def _call_one(
        self,
        m: _Managed,
        messages: list[ChatMessage],
        schema: dict,
        parse: Callable[[str], T],
        max_tokens: int,
        temperature: float,
        op_usage: LLMUsage,
    ) -> tuple[T, LLMReply]:
        b = m.backend
        counters = op_usage.counters(b.name, b.model)
        prompt = messages
        retries = 0
        repairs = 0
        while True:
            try:
                reply = await self._send(m, prompt, schema, max_tokens, temperature)
            except (LLMTransientError, TimeoutError) as e:
                counters.calls += 1
                counters.transient_errors += 1
                counters.timeouts += isinstance(e, TimeoutError)
                m.breaker.record_failure()
                reason = "timeout" if isinstance(e, TimeoutError) else str(e)
                if retries >= len(self.policy.backoff_s) or (m.breaker.state is BreakerState.OPEN):
                    raise _Unreachable(f"{reason} (after {retries + 1} attempts)") from e
                delay = self.policy.backoff_s[retries]
                retries += 1
                log.warning("%s failed (%s); retry %d in %.1fs", b.name, reason, retries, delay)
                await self._sleep(delay)
                continue
            except LLMBackendDown as e:
                counters.calls += 1
                counters.backend_down += 1
                m.breaker.trip()
                raise _Unreachable(str(e)) from e
            except LLMRequestRejected as e:
                counters.calls += 1
                counters.rejected += 1
                raise _Unusable(f"request rejected: {e}", None) from e
            op_usage.record_reply(reply, repair=repairs > 0)
            try:
                return parse(reply.text), reply
            except ParseError as e:
                counters.parse_failures += 1
                if repairs >= self.policy.repair_attempts:
                    raise _Unusable(
                        f"invalid output after {repairs} repair(s): {e}", reply.text
                    ) from e
                repairs += 1
                prompt = [
                    *messages,
                    {"role": "assistant", "content": reply.text},
                    repair_message(e, reply),
                ]

    async def _send(
        self,
        m: _Managed,
        prompt: list[ChatMessage],
        schema: dict,
        max_tokens: int,
        temperature: float,
    ) -> LLMReply:
        """One request under the concurrency limit and the breaker; the timeout covers the
        request only, not the wait for a free slot."""
        async with m.semaphore:
            if not m.breaker.try_acquire():
                raise _Unreachable(
                    f"circuit {m.breaker.state.value}, retry in {m.breaker.retry_after_s():.1f}s"
                )
            m.in_flight += 1
            try:
                reply = await asyncio.wait_for(
                    m.backend.chat_json(
                        prompt,
                        schema,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        timeout_s=self.policy.timeout_s,
                    ),
                    self.policy.timeout_s,
                )
            except (LLMTransientError, LLMBackendDown, TimeoutError):
                raise  # the caller records the failure on the breaker
            except LLMRequestRejected:
                m.breaker.record_success()  # it answered: the backend is alive
                raise
            except asyncio.CancelledError:
                m.breaker.release()
                raise
            except Exception as e:
                # An unknown error from a client library: treat as transient, keep the trace.
                log.exception("%s raised an unexpected error", m.backend.name)
                raise LLMTransientError(f"{type(e).__name__}: {e}") from e
            finally:
                m.in_flight -= 1
            m.breaker.record_success()
            return reply
