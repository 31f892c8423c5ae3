"""Requests to and replies from Ray Serve LLM's `LLMServer`, as plain data.

`deployments/llm_server.py` wraps these in ray[llm]'s request model and calls the deployment;
the mapping itself needs no ray and is tested without it.
"""

from __future__ import annotations

from typing import Any

from serve_app.llm.base import (
    ChatMessage,
    LLMReply,
    LLMRequestRejected,
    LLMTransientError,
)


def chat_request_kwargs(
    model: str,
    messages: list[ChatMessage],
    schema: dict,
    *,
    max_tokens: int,
    temperature: float,
) -> dict:
    """`ChatCompletionRequest` fields: non-streaming, JSON schema by guided decoding."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        },
    }


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def reply_from_response(response: Any, *, backend: str, model: str) -> LLMReply:
    """A `ChatCompletionResponse` (or `ErrorResponse`) from `LLMServer.chat` as an `LLMReply`."""
    error = _field(response, "error")
    if error is not None:
        code = _field(error, "code")
        message = f"{backend}: {code} {_field(error, 'message')}"
        if isinstance(code, int) and 400 <= code < 500 and code != 429:
            raise LLMRequestRejected(message)
        raise LLMTransientError(message)
    choices = _field(response, "choices") or []
    if not choices:
        raise LLMTransientError(f"{backend}: reply without choices")
    choice = choices[0]
    usage = _field(response, "usage")
    return LLMReply(
        text=_field(_field(choice, "message"), "content") or "",
        prompt_tokens=(_field(usage, "prompt_tokens") or 0) if usage is not None else 0,
        completion_tokens=(_field(usage, "completion_tokens") or 0) if usage is not None else 0,
        backend=backend,
        model=model,
        finish_reason=_field(choice, "finish_reason"),
    )
