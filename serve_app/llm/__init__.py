"""LLM step of memory construction: backends, extraction, session summaries, resilience.

Pure (no `ray`): the Ray Serve LLM backend lives in `deployments/llm.py`.
"""

from serve_app.llm.accounting import LLMUsage, UsageCounters
from serve_app.llm.base import (
    LLMBackend,
    LLMBackendDown,
    LLMError,
    LLMReply,
    LLMRequestRejected,
    LLMTransientError,
    ParseError,
)
from serve_app.llm.config import BackendSpec, LLMSettings, build_resilient_llm
from serve_app.llm.extraction import (
    ExtractedFact,
    Extraction,
    ExtractionLimits,
    ParseReport,
    SourceMessage,
    extract_memories,
)
from serve_app.llm.resilience import (
    LLMOutputInvalid,
    LLMResult,
    LLMUnavailable,
    ResilientLLM,
    RetryPolicy,
)
from serve_app.llm.summaries import SessionNote, SessionSummary, summarize_session

__all__ = [
    "BackendSpec",
    "ExtractedFact",
    "Extraction",
    "ExtractionLimits",
    "LLMBackend",
    "LLMBackendDown",
    "LLMError",
    "LLMOutputInvalid",
    "LLMReply",
    "LLMRequestRejected",
    "LLMResult",
    "LLMSettings",
    "LLMTransientError",
    "LLMUnavailable",
    "LLMUsage",
    "ParseError",
    "ParseReport",
    "ResilientLLM",
    "RetryPolicy",
    "SessionNote",
    "SessionSummary",
    "SourceMessage",
    "UsageCounters",
    "build_resilient_llm",
    "extract_memories",
    "summarize_session",
]
