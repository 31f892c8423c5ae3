"""Scripted engine double: same interface as the real backends, replies come from a script.

Used by unit tests (bad JSON, timeouts, outages in a chosen order) and by the token-economy
benchmark, which needs the exact prompts the real pipeline would send and their token counts,
without an engine. Every call is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from serve_app.llm.base import ChatMessage, ChatRequest, LLMBackend, LLMReply
from serve_app.pipeline.tokens import count_tokens as cl100k_tokens

Responder = Callable[[list[ChatMessage], dict], str]


@dataclass(frozen=True)
class Reply:
    text: str
    delay_s: float = 0.0
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Fail:
    error: BaseException
    delay_s: float = 0.0


@dataclass(frozen=True)
class Respond:
    """Reply computed from the prompt and schema (e.g. `schema_example`)."""

    responder: Responder
    delay_s: float = 0.0


Step = Reply | Fail | Respond


# What a scripted backend records of each call (the messages copied at call time).
ScriptedCall = ChatRequest


@dataclass
class ScriptedBackend(LLMBackend):
    """Plays `script` in order; when it runs out, uses `default` (or raises AssertionError).

    Tokens are counted with cl100k_base (as LightMem's figures are) unless `count_tokens` is set.

    Plain strings in the script are `Reply`s, exceptions are `Fail`s, callables `Respond`s.
    """

    script: Iterable[Step | str | BaseException | Responder] = ()
    name: str = "scripted"
    model: str = "scripted"
    default: Step | None = None
    count_tokens: Callable[[str], int] | None = None
    calls: list[ScriptedCall] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._steps: deque[Step] = deque(_as_step(s) for s in self.script)

    def push(self, *steps: Step | str | BaseException | Responder) -> None:
        self._steps.extend(_as_step(s) for s in steps)

    @property
    def remaining(self) -> int:
        return len(self._steps)

    async def complete(self, request: ChatRequest) -> LLMReply:
        messages, schema = request.messages, request.schema
        self.calls.append(replace(request, messages=[dict(m) for m in messages]))
        if self._steps:
            step = self._steps.popleft()
        elif self.default is not None:
            step = self.default
        else:
            raise AssertionError(f"{self.name}: script exhausted after {len(self.calls)} calls")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if step.delay_s:
                await asyncio.sleep(step.delay_s)
            if isinstance(step, Fail):
                raise step.error
            if isinstance(step, Respond):
                step = Reply(step.responder(messages, schema))
        finally:
            self.in_flight -= 1
        count = self.count_tokens or cl100k_tokens
        return LLMReply(
            text=step.text,
            prompt_tokens=chat_prompt_tokens(messages, count),
            completion_tokens=(
                step.completion_tokens if step.completion_tokens is not None else count(step.text)
            ),
            backend=self.name,
            model=self.model,
            finish_reason=step.finish_reason,
        )


def _as_step(s: Step | str | BaseException | Responder) -> Step:
    if isinstance(s, Reply | Fail | Respond):
        return s
    if isinstance(s, str):
        return Reply(s)
    if isinstance(s, BaseException):
        return Fail(s)
    if callable(s):
        return Respond(s)
    raise TypeError(f"not a script step: {s!r}")


def chat_prompt_tokens(messages: list[ChatMessage], count: Callable[[str], int]) -> int:
    """Prompt tokens as OpenAI bills a chat: 3 per message (role and separators) + 3 priming."""
    return sum(3 + count(m.get("role", "")) + count(m.get("content", "")) for m in messages) + 3


def schema_example(schema: dict) -> object:
    """The smallest instance of `schema`: required properties only, minItems items, first enum.

    Covers the subset of JSON schema that this package's schemas use.
    """
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return schema_example(schema["anyOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: schema_example(props[k]) for k in schema.get("required", [])}
    if kind == "array":
        return [schema_example(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def schema_example_responder(messages: list[ChatMessage], schema: dict) -> str:
    return json.dumps(schema_example(schema))
