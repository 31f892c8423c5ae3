"""LLM replica group, `vllm` backend: Ray Serve LLM's `LLMServer` on the profile's GPU share,
and the `LLMBackend` that the ingest worker uses to call it through its deployment handle.

ray[llm] (and the vLLM it pins) is the optional `gpu` extra: it is imported only inside these
functions, so CPU installs can import this module.
"""

from __future__ import annotations

from typing import Any

from serve_app.llm.base import (
    ChatMessage,
    LLMReply,
    LLMRequestRejected,
    LLMTransientError,
)
from serve_app.llm.vllm_config import DEPLOYMENT_NAME, llm_config_kwargs_for_profile
from serve_app.profiles import HardwareProfile


def build_llm_config(profile: HardwareProfile):
    """The validated `ray.serve.llm.LLMConfig` for the profile's LLM group."""
    from ray.serve.llm import LLMConfig

    return LLMConfig(**llm_config_kwargs_for_profile(profile))


def build_llm_app(profile: HardwareProfile):
    """The bound `LLMServer` deployment, named "LLM", to pass to the worker's `.bind()`."""
    from ray.serve.llm import build_llm_deployment

    return build_llm_deployment(
        build_llm_config(profile), override_serve_options={"name": DEPLOYMENT_NAME}
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


class ServeLLMBackend:
    """Calls the in-cluster `LLMServer` deployment. `LLMServer.chat()` returns an async
    generator even when not streaming, so the handle is always used with stream=True and the
    single non-streaming response is read from it."""

    def __init__(self, handle: Any, *, model: str, name: str = "vllm") -> None:
        self._handle = handle.options(stream=True)
        self.model = model
        self.name = name

    async def chat_json(
        self,
        messages: list[ChatMessage],
        schema: dict,
        *,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> LLMReply:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        request = ChatCompletionRequest(
            **chat_request_kwargs(
                self.model, messages, schema, max_tokens=max_tokens, temperature=temperature
            )
        )
        # The caller's asyncio timeout cancels this iteration, which cancels the request.
        last = None
        async for item in self._handle.chat.remote(request):
            last = item
        if last is None:
            raise LLMTransientError(f"{self.name}: empty response stream")
        return reply_from_response(last, backend=self.name, model=self.model)
