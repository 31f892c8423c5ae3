"""The `vllm` backend's Serve side: Ray Serve LLM's `LLMServer` application built from the
profile's `LLMConfig` (on the profile's GPU share), and the `LLMBackend` that calls it through
its deployment handle.

ray[llm] (and the vLLM it pins) is the optional `gpu` extra: it is imported only inside these
functions, so CPU installs can import this module.
"""

from __future__ import annotations

from typing import Any

from serve_app.llm.base import ChatRequest, LLMBackend, LLMReply, LLMTransientError
from serve_app.llm.llm_server_api import chat_request_kwargs, reply_from_response
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


class ServeLLMBackend(LLMBackend):
    """Calls the in-cluster `LLMServer` deployment. `LLMServer.chat()` returns an async
    generator even when not streaming, so the handle is always used with stream=True and the
    single non-streaming response is read from it."""

    def __init__(self, handle: Any, *, model: str, name: str = "vllm") -> None:
        self._handle = handle.options(stream=True)
        self.model = model
        self.name = name

    async def complete(self, request: ChatRequest) -> LLMReply:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        chat = ChatCompletionRequest(
            **chat_request_kwargs(
                self.model,
                request.messages,
                request.schema,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
            )
        )
        # The caller's asyncio timeout cancels this iteration, which cancels the request.
        last = None
        async for item in self._handle.chat.remote(chat):
            last = item
        if last is None:
            raise LLMTransientError(f"{self.name}: empty response stream")
        return reply_from_response(last, backend=self.name, model=self.model)
