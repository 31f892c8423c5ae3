"""The one interface every LLM backend implements, and the errors backends raise.

Backends only transport: they send chat messages plus a JSON schema and return the raw text
and token usage. Retries, timeouts, fallback and circuit breaking live in `resilience`, so
every backend (OpenAI-compatible HTTP, Ray Serve LLM handle, scripted double) behaves the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class LLMReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    backend: str
    model: str
    # "length" means the JSON was probably cut off by max_tokens.
    finish_reason: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion asked for: the reply should be a JSON object matching `schema`."""

    messages: list[ChatMessage]
    schema: dict
    max_tokens: int
    temperature: float
    timeout_s: float


class LLMBackend(ABC):
    """A transport to one model; subclasses implement `complete`."""

    name: str
    model: str

    async def chat_json(
        self,
        messages: list[ChatMessage],
        schema: dict,
        *,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> LLMReply:
        """One chat completion whose reply should be a JSON object matching `schema`."""
        return await self.complete(
            ChatRequest(messages, schema, max_tokens, temperature, timeout_s)
        )

    @abstractmethod
    async def complete(self, request: ChatRequest) -> LLMReply: ...


class LLMError(Exception):
    """Base class of the errors a backend raises."""


class LLMTransientError(LLMError):
    """Timeout, connection failure, 429 or 5xx: retried with backoff, counts against the breaker."""


class LLMBackendDown(LLMError):
    """The backend cannot serve anything (bad key, unknown model): not retried, opens the breaker
    at once; the half-open probe after the cool-down finds out when it is fixed."""


class LLMRequestRejected(LLMError):
    """The backend is healthy but refuses this request (e.g. prompt longer than the context).

    Not retried on the same backend and not a breaker failure; the next backend may accept it.
    """


class ParseError(ValueError):
    """A reply that is not the JSON asked for; the message is shown to the model on repair."""


def schema_prompt(schema: dict) -> str:
    """Instruction appended when a backend cannot enforce the schema by guided decoding."""
    import json

    return (
        "Reply with one JSON object only, no prose and no code fences. "
        "It must validate against this JSON schema:\n" + json.dumps(schema, separators=(",", ":"))
    )


def with_schema_in_prompt(messages: list[ChatMessage], schema: dict) -> list[ChatMessage]:
    """Copy of `messages` whose system message (added if absent) carries the schema."""
    extra = schema_prompt(schema)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{extra}"
    else:
        out.insert(0, {"role": "system", "content": extra})
    return out
