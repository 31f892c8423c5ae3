"""Re-extraction, the pure part: which configuration builds a new memory version, and the
LightMem pipeline run offline over one session's stored raw messages (compression, topic
segmentation, short-term buffers, then one LLM extraction per flushed buffer or extractive
entries). No Ray and no database in here: engines come in as async callables, the driver
(`reextract.py`) reads the messages and writes what this returns.

It is the same code the ingest worker runs (pipeline/intake.py, SessionBuffers,
pipeline/extractive.py, pipeline/facts.py); only the configuration differs (a new prompt,
compression rate, LLM or entry unit), and entry ids carry the new version.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from serve_app.llm.accounting import LLMUsage
from serve_app.llm.config import BackendSpec, LLMSettings
from serve_app.llm.resilience import LLMOutputInvalid, LLMUnavailable, ResilientLLM
from serve_app.model.entries import EntryContext, EntryRow
from serve_app.model.messages import StoredMessage
from serve_app.pipeline.buffers import BufferConfig, SessionBuffers, ShortTermFlush
from serve_app.pipeline.extractive import ENTRY_UNITS, extractive_rows
from serve_app.pipeline.facts import extract_flush, extraction_entries
from serve_app.pipeline.intake import Attend, Compress, Cutter, Embed, intake
from serve_app.pipeline.segmentation import SegmentationConfig

MAX_PROMPT_CHARS = 20_000


class ReextractConfigError(ValueError):
    """The parameters ask for something this service cannot do (shown to the caller)."""


@dataclass(frozen=True)
class ExtractionSpec:
    """How a memory version is built. Stored with its generation (vector_generations.extraction)
    for audit; the ingest worker applies `prompt` and `entry_unit` to what it adds later."""

    prompt: str | None  # system prompt of the LLM extraction; None: the built-in one
    compress_rate: float | None  # LLMLingua-2 rate; None: no compression
    llm: tuple[dict, ...] | None  # [{"backend", "kind", "model"}] in order; None: extractive
    entry_unit: str  # extractive entries (and the LLM's fallback)
    sensory_max_tokens: int
    short_term_max_tokens: int

    def __post_init__(self) -> None:
        if self.entry_unit not in ENTRY_UNITS:
            raise ReextractConfigError(
                f"unknown entry unit {self.entry_unit!r}; choose one of {ENTRY_UNITS}"
            )
        if self.compress_rate is not None and not 0 < self.compress_rate <= 1:
            raise ReextractConfigError(f"compress rate must be in (0, 1], got {self.compress_rate}")
        if self.prompt is not None and not self.prompt.strip():
            raise ReextractConfigError("the prompt is blank")
        if self.prompt is not None and len(self.prompt) > MAX_PROMPT_CHARS:
            raise ReextractConfigError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")

    def record(self, job_id: str) -> dict:
        return {
            "job_id": job_id,
            "prompt": self.prompt,
            "prompt_sha256": (
                hashlib.sha256(self.prompt.encode()).hexdigest() if self.prompt else None
            ),
            "compress_rate": self.compress_rate,
            "llm": list(self.llm) if self.llm is not None else None,
            "entry_unit": self.entry_unit,
            "sensory_max_tokens": self.sensory_max_tokens,
            "short_term_max_tokens": self.short_term_max_tokens,
        }


def llm_record(settings: LLMSettings | None) -> tuple[dict, ...] | None:
    if settings is None or not settings.enabled:
        return None
    return tuple({"backend": b.label, "kind": b.kind, "model": b.model} for b in settings.backends)


def resolve_llm(
    service: LLMSettings,
    *,
    no_llm: bool = False,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> LLMSettings | None:
    """The LLM a re-extraction uses: the service's own (as the ingest worker has it now) by
    default; none (`no_llm`: extractive entries); the service's OpenAI-compatible endpoints
    with another `model`; or another endpoint (`base_url`, with `model`)."""
    if no_llm:
        if model or base_url:
            raise ReextractConfigError("no_llm excludes llm_model and llm_base_url")
        return None
    if base_url:
        if not model:
            raise ReextractConfigError("llm_base_url needs llm_model")
        spec = BackendSpec(
            kind="openai", model=model, name="reextract", base_url=base_url, api_key=api_key
        )
        return service.model_copy(update={"backends": [spec]})
    if model:
        backends = [b.model_copy(update={"model": model}) for b in service.backends]
        backends = [b for b in backends if b.kind == "openai"]
        if not backends:
            raise ReextractConfigError(
                f"llm_model {model!r} needs an OpenAI-compatible backend in the service's LLM"
                " settings (the in-cluster vLLM serves one fixed model); give llm_base_url"
            )
        return service.model_copy(update={"backends": backends})
    return service if service.enabled else None


def resolve_spec(params: dict, cfg: dict, api_key: str | None = None):
    """(ExtractionSpec, LLMSettings | None) from the job's parameters and what the service
    extracts with now (IngestWorker.extraction_config)."""
    compression = cfg["compression"]
    if params.get("no_compress"):
        rate = None
    elif params.get("compress_rate") is not None:
        if not compression.get("enabled"):
            raise ReextractConfigError(
                "compress_rate needs the Compressor group, which is off in this service: "
                f"{compression.get('reason')}"
            )
        rate = float(params["compress_rate"])
    else:
        rate = compression.get("rate") if compression.get("enabled") else None
    llm = resolve_llm(
        cfg["llm_settings"],
        no_llm=bool(params.get("no_llm")),
        model=params.get("llm_model"),
        base_url=params.get("llm_base_url"),
        api_key=api_key,
    )
    spec = ExtractionSpec(
        prompt=params.get("prompt"),
        compress_rate=rate,
        llm=llm_record(llm),
        entry_unit=params.get("entry_unit") or cfg["entry_unit"],
        sensory_max_tokens=int(params.get("sensory_max_tokens") or cfg["sensory_max_tokens"]),
        short_term_max_tokens=int(
            params.get("short_term_max_tokens") or cfg["short_term_max_tokens"]
        ),
    )
    return spec, llm


@dataclass
class SessionResult:
    rows: list[EntryRow]
    message_ids: list[str]  # the messages these entries cover (all given)
    flushes: int = 0
    fallbacks: int = 0  # flushes whose LLM output was unusable: extractive entries instead
    usage: LLMUsage = field(default_factory=LLMUsage)


class SessionExtractor:
    """One memory version's pipeline over whole sessions (stored messages in seq order)."""

    def __init__(
        self,
        spec: ExtractionSpec,
        *,
        version: int,
        embedding_model: str,
        embed: Embed,
        compress: Compress | None = None,
        attend: Attend | None = None,
        llm: ResilientLLM | None = None,
        llm_settings: LLMSettings | None = None,
        segmentation: SegmentationConfig | None = None,
    ) -> None:
        if (spec.compress_rate is not None) != (compress is not None):
            raise ValueError("compress must be given exactly when the spec compresses")
        if (spec.llm is not None) != (llm is not None):
            raise ValueError("llm must be given exactly when the spec uses an LLM")
        self.spec = spec
        self.version = version
        self.embedding_model = embedding_model
        self.compress = compress
        self.llm = llm
        self.llm_settings = llm_settings or LLMSettings()
        self.buffer_config = BufferConfig(spec.sensory_max_tokens, spec.short_term_max_tokens)
        self.cut = Cutter(embed, segmentation or SegmentationConfig(), attend)

    async def run(self, messages: Sequence[StoredMessage]) -> SessionResult:
        """Entries of one session. Raises LLMUnavailable when the LLM cannot be reached (the
        session is left for a later pass); unusable LLM output for one flush falls back to
        extractive entries for that flush (counted), so no message is left without memories."""
        messages = sorted(messages, key=lambda m: m.seq)
        result = SessionResult(rows=[], message_ids=[m.message_id for m in messages])
        if not messages:
            return result
        intook = await intake(messages, self.compress)
        state = SessionBuffers(config=self.buffer_config)
        flushes = await state.add_async([i.buffered for i in intook], self.cut)
        flushes += await state.flush_async(self.cut)
        result.flushes = len(flushes)
        by_id = {m.message_id: m for m in messages}
        ctx = EntryContext(
            messages[0].user_id, messages[0].session_id, self.version, self.embedding_model
        )
        if self.llm is None:
            result.rows = self._extractive(flushes, by_id, ctx)
            return result
        compressed = {i.buffered.message_id: i.compressed for i in intook}
        outcomes = await asyncio.gather(
            *(self._llm_flush(f, by_id, compressed, ctx, result) for f in flushes)
        )
        position = {m.message_id: i for i, m in enumerate(messages)}
        for f, rows in zip(flushes, outcomes, strict=True):
            if rows is None:
                result.fallbacks += 1
                first = position[f.messages[0].message_id]
                prev = messages[first - 1] if first > 0 else None
                rows = self._extractive([f], by_id, ctx, prev=prev, fallback=True)
            result.rows.extend(rows)
        return result

    async def _llm_flush(
        self,
        flush: ShortTermFlush,
        by_id: dict[str, StoredMessage],
        compressed: dict[str, str | None],
        ctx: EntryContext,
        result: SessionResult,
    ) -> list[EntryRow] | None:
        assert self.llm is not None
        ms = [by_id[m.message_id] for m in flush.messages]
        try:
            out = await extract_flush(self.llm, self.llm_settings, ms, compressed, self.spec.prompt)
        except LLMOutputInvalid as e:
            result.usage.merge(e.usage)
            return None
        except LLMUnavailable as e:
            result.usage.merge(e.usage)
            raise
        result.usage.merge(out.usage)
        return extraction_entries(
            out.value,
            ctx,
            flush_index=flush.flush_index,
            messages=ms,
            topics=flush.topics(),
            backend=out.reply.backend,
            model=out.reply.model,
        )

    def _extractive(
        self,
        flushes: Sequence[ShortTermFlush],
        by_id: dict[str, StoredMessage],
        ctx: EntryContext,
        prev: StoredMessage | None = None,
        fallback: bool = False,
    ) -> list[EntryRow]:
        """Extractive entries as the worker builds them: per segment, from the original text,
        the previous message as context (message_ctx)."""
        rows: list[EntryRow] = []
        for flush in flushes:
            groups = [[by_id[m.message_id] for m in s.messages] for s in flush.segments]
            rows += extractive_rows(
                groups,
                prev,
                ctx,
                unit=self.spec.entry_unit,
                flush_index=flush.flush_index,
                topics=flush.topics(),
                fallback=fallback,
            )
            prev = next((g[-1] for g in reversed(groups) if g), prev)
        return rows
