"""LLM step of memory construction: backends, extraction, session summaries, resilience.

Pure (no `ray`): the Ray Serve LLM backend lives in `deployments/llm_server.py`. The names below are
loaded on first use, so importing a light submodule (`base`, `jsonreply`) does not pull in the
openai client.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LLMUsage": "accounting",
    "UsageCounters": "accounting",
    "ChatRequest": "base",
    "LLMBackend": "base",
    "LLMBackendDown": "base",
    "LLMError": "base",
    "LLMReply": "base",
    "LLMRequestRejected": "base",
    "LLMTransientError": "base",
    "ParseError": "base",
    "BackendSpec": "config",
    "LLMSettings": "config",
    "build_resilient_llm": "config",
    "with_profile_backend": "config",
    "ExtractedFact": "extraction",
    "Extraction": "extraction",
    "ExtractionLimits": "extraction",
    "ParseReport": "extraction",
    "SourceMessage": "extraction",
    "extract_memories": "extraction",
    "LLMOutputInvalid": "resilience",
    "LLMResult": "resilience",
    "LLMUnavailable": "resilience",
    "ResilientLLM": "resilience",
    "RetryPolicy": "resilience",
    "SessionNote": "summaries",
    "SessionSummary": "summaries",
    "summarize_session": "summaries",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'serve_app.llm' has no attribute {name!r}")
    return getattr(import_module(f"serve_app.llm.{module}"), name)
