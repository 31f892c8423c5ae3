"""Token and call counters per (backend, model): a plain object the worker persists.

Every request that reaches a backend is one call, whatever its outcome; tokens are what the
backend reported (or the double counted). `LLMUsage` is used both per operation (attached to
each extraction so the worker can add it to the session's row in the same transaction) and as
the process-wide ledger behind the metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from serve_app.llm.base import LLMReply


@dataclass
class UsageCounters:
    calls: int = 0  # requests sent, any outcome
    ok: int = 0  # replies received (valid JSON or not)
    transient_errors: int = 0  # timeouts, connection errors, 429/5xx
    timeouts: int = 0  # subset of transient_errors
    backend_down: int = 0  # auth / unknown model
    rejected: int = 0  # the backend refused the request (400/422)
    parse_failures: int = 0  # replies that did not validate
    repair_calls: int = 0  # calls that showed the model its parse error
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: UsageCounters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class LLMUsage:
    by_model: dict[tuple[str, str], UsageCounters] = field(default_factory=dict)

    def counters(self, backend: str, model: str) -> UsageCounters:
        return self.by_model.setdefault((backend, model), UsageCounters())

    def record_reply(self, reply: LLMReply, *, repair: bool = False) -> None:
        c = self.counters(reply.backend, reply.model)
        c.calls += 1
        c.ok += 1
        c.repair_calls += int(repair)
        c.prompt_tokens += reply.prompt_tokens
        c.completion_tokens += reply.completion_tokens

    def merge(self, other: LLMUsage) -> None:
        for (backend, model), c in other.by_model.items():
            self.counters(backend, model).add(c)

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.by_model.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.by_model.values())

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.by_model.values())

    def rows(self) -> list[dict]:
        """One flat dict per (backend, model), ready for an INSERT ... ON CONFLICT DO UPDATE."""
        return [
            {"backend": b, "model": m, **asdict(c)} for (b, m), c in sorted(self.by_model.items())
        ]

    def take(self) -> LLMUsage:
        """Return the counts so far and start from zero (for periodic persistence of deltas)."""
        snapshot = LLMUsage()
        snapshot.by_model, self.by_model = self.by_model, {}
        return snapshot
