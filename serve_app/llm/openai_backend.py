"""Any OpenAI-compatible chat endpoint (vLLM server, Ollama, DeepSeek, OpenAI) via `openai`.

Structured output is asked for in the strongest form the server accepts, trying in order:
`json_schema` (guided decoding), `json_object`, then plain text, the last two with the schema
written into the prompt. A lower form is remembered only once it has worked, so a request that
is rejected for another reason (prompt too long) does not downgrade the backend for good.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import openai

from serve_app.llm.base import (
    ChatRequest,
    LLMBackend,
    LLMBackendDown,
    LLMReply,
    LLMRequestRejected,
    LLMTransientError,
    with_schema_in_prompt,
)

log = logging.getLogger(__name__)

StructuredMode = Literal["json_schema", "json_object", "prompt"]
MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object", "prompt")


class OpenAIBackend(LLMBackend):
    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        name: str | None = None,
        structured: StructuredMode = "json_schema",
        schema_name: str = "reply",
        extra_body: dict[str, Any] | None = None,
        http_client: Any = None,
    ) -> None:
        self.name = name or "openai"
        self.model = model
        self.mode: StructuredMode = structured
        self._schema_name = schema_name
        self._extra_body = extra_body
        # Retries are the resilience layer's job: the client must fail fast and report why.
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            max_retries=0,
            http_client=http_client,
        )

    async def complete(self, request: ChatRequest) -> LLMReply:
        start = MODES.index(self.mode)
        rejected: openai.APIStatusError | None = None
        for mode in MODES[start:]:
            try:
                reply = await self._create(request, mode)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                rejected = e
                continue
            if mode != self.mode:
                log.warning(
                    "%s (%s) rejected response_format=%s; using %s from now on",
                    self.name,
                    self.model,
                    self.mode,
                    mode,
                )
                self.mode = mode
            return reply
        raise LLMRequestRejected(f"{self.name}: {_describe(rejected)}") from rejected

    async def _create(self, request: ChatRequest, mode: StructuredMode) -> LLMReply:
        messages, schema = request.messages, request.schema
        kwargs: dict[str, Any] = {}
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": self._schema_name, "schema": schema, "strict": True},
            }
        else:
            messages = with_schema_in_prompt(messages, schema)
            if mode == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
        if self._extra_body:
            kwargs["extra_body"] = self._extra_body
        try:
            resp = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                timeout=request.timeout_s,
                **kwargs,
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError):
            raise
        except (
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
        ) as e:
            raise LLMBackendDown(f"{self.name}: {_describe(e)}") from e
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            # APITimeoutError is an APIConnectionError; 429, 5xx and the rest are status errors.
            raise LLMTransientError(f"{self.name}: {_describe(e)}") from e
        if not resp.choices:
            raise LLMTransientError(f"{self.name}: reply without choices")
        choice = resp.choices[0]
        usage = resp.usage
        return LLMReply(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            backend=self.name,
            model=self.model,
            finish_reason=choice.finish_reason,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "rejected"
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}({status}): {e}" if status else f"{type(e).__name__}: {e}"
