"""LLM configuration: which backends, in which order of preference, and how patient to be.

Meant to be nested in `serve_app.settings.Settings` (e.g. `llm: LLMSettings`), so it reads
from MEMSERVE_LLM__* variables, e.g.
    MEMSERVE_LLM__BACKENDS='[{"kind": "openai", "base_url": "http://127.0.0.1:8001/v1",
                              "model": "Qwen/Qwen2.5-7B-Instruct"}]'
No backends means the extractive mode (`none`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from serve_app.llm.accounting import LLMUsage
from serve_app.llm.base import LLMBackend
from serve_app.llm.extraction import ExtractionLimits
from serve_app.llm.openai_backend import OpenAIBackend
from serve_app.llm.resilience import ResilientLLM, RetryPolicy
from serve_app.profiles import LLMGroup


class BackendSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["openai", "vllm"]
    model: str
    name: str | None = None  # defaults to kind; must be unique in the list
    base_url: str | None = None  # openai: the server's /v1 URL (None: api.openai.com)
    api_key: SecretStr | None = None
    structured: Literal["json_schema", "json_object", "prompt"] = "json_schema"
    max_concurrency: int = Field(default=4, ge=1)
    extra_body: dict[str, Any] | None = None  # openai: sampling extras, e.g. repetition_penalty

    @property
    def label(self) -> str:
        return self.name or self.kind


class LLMSettings(BaseModel):
    backends: list[BackendSpec] = []  # order of preference; the rest are fallbacks
    timeout_s: float = Field(default=120.0, gt=0)
    backoff_s: tuple[float, ...] = (2.0, 4.0, 8.0)
    repair_attempts: int = Field(default=1, ge=0)
    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout_s: float = Field(default=30.0, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    extraction_max_tokens: int = Field(default=1536, ge=64)
    summary_max_tokens: int = Field(default=1024, ge=64)
    max_facts: int | None = Field(default=None, ge=1)
    fact_chars: int = Field(default=400, ge=20)
    list_items: int = Field(default=8, ge=0)
    item_chars: int = Field(default=60, ge=5)
    summary_chars: int = Field(default=600, ge=20)

    @model_validator(mode="after")
    def _unique_names(self) -> LLMSettings:
        labels = [b.label for b in self.backends]
        if len(set(labels)) != len(labels):
            raise ValueError(f"LLM backend names must be unique, got {labels}")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.backends)

    def limits(self) -> ExtractionLimits:
        return ExtractionLimits(
            max_facts=self.max_facts,
            fact_chars=self.fact_chars,
            list_items=self.list_items,
            item_chars=self.item_chars,
            summary_chars=self.summary_chars,
        )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            backoff_s=self.backoff_s, timeout_s=self.timeout_s, repair_attempts=self.repair_attempts
        )


def with_profile_backend(settings: LLMSettings, group: LLMGroup) -> LLMSettings:
    """The backends to use given the profile's LLM group: a profile hosting vLLM puts the
    in-cluster engine first (configured endpoints stay as fallbacks); `openai` requires
    configured endpoints; `none` uses whatever endpoints are configured (none: extractive)."""
    if group.backend == "vllm" and not any(b.kind == "vllm" for b in settings.backends):
        spec = BackendSpec(kind="vllm", model=group.model or "", name="vllm")
        return settings.model_copy(update={"backends": [spec, *settings.backends]})
    if group.backend == "openai" and not any(b.kind == "openai" for b in settings.backends):
        raise ValueError("LLM backend 'openai' needs an endpoint in MEMSERVE_LLM__BACKENDS")
    return settings


def make_backend(spec: BackendSpec, *, vllm_backend: LLMBackend | None = None) -> LLMBackend:
    if spec.kind == "openai":
        return OpenAIBackend(
            base_url=spec.base_url,
            api_key=spec.api_key.get_secret_value() if spec.api_key else None,
            model=spec.model,
            name=spec.label,
            structured=spec.structured,
            extra_body=spec.extra_body,
        )
    if vllm_backend is None:
        raise ValueError("a 'vllm' backend needs the LLM deployment's handle (vllm_backend)")
    return vllm_backend


def build_resilient_llm(
    settings: LLMSettings,
    *,
    vllm_backend: LLMBackend | None = None,
    usage: LLMUsage | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> ResilientLLM | None:
    """The configured backends behind retries, fallback and breakers; None when disabled."""
    if not settings.enabled:
        return None
    backends = [make_backend(s, vllm_backend=vllm_backend) for s in settings.backends]
    extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return ResilientLLM(
        backends,
        policy=settings.policy(),
        max_concurrency=[s.max_concurrency for s in settings.backends],
        failure_threshold=settings.failure_threshold,
        reset_timeout_s=settings.reset_timeout_s,
        usage=usage,
        **extra,
    )
