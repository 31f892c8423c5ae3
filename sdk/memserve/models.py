"""HTTP API v1 request and response models. All input validation lives here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from memserve.timeparse import TimestampError, parse_timestamp

# Ids end up in URLs, logs and collection names: keep them printable and bounded.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^\S+$")]
Metadata = dict[str, Any]


def _unstorable(value: Any) -> str | None:
    """Why PostgreSQL could not store `value` (text and jsonb refuse NUL characters and what
    is not UTF-8, such as lone surrogates; jsonb refuses NaN and infinities), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text may not contain NUL (\\u0000) characters"
        try:
            value.encode()
        except UnicodeEncodeError:
            return "text must be valid Unicode (no lone surrogates)"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return None
    for v in items:
        if (why := _unstorable(v)) is not None:
            return why
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        if (why := _unstorable(data)) is not None:
            raise ValueError(why)
        return data


class MessageIn(_Strict):
    role: Literal["user", "assistant", "system", "tool"]
    content: Annotated[str, StringConstraints(min_length=1, max_length=32_000)]
    timestamp: datetime | str | None = None
    message_id: MessageId | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @field_validator("content")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("content is blank")
        return v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_ts(cls, v: Any) -> datetime | None:
        if v is None:
            return None
        if not isinstance(v, str | datetime):
            raise ValueError("timestamp must be a string")
        try:
            return parse_timestamp(v)
        except TimestampError as e:
            raise ValueError(str(e)) from None


class AddMemoriesRequest(_Strict):
    user_id: Id
    session_id: Id
    messages: list[MessageIn] = Field(min_length=1, max_length=1000)
    metadata: Metadata | None = None
    flush: bool = False
    wait: bool = False

    @model_validator(mode="after")
    def _unique_ids(self) -> AddMemoriesRequest:
        seen: set[str] = set()
        for i, m in enumerate(self.messages):
            if m.message_id is not None:
                if m.message_id in seen:
                    raise ValueError(f"messages[{i}].message_id {m.message_id!r} is repeated")
                seen.add(m.message_id)
        return self


class AddMemoriesResponse(BaseModel):
    session_id: str
    accepted: int = Field(description="messages stored by this request (repeats are not counted)")
    message_ids: list[str]
    pending: int | None = Field(
        default=None, description="with wait: messages of this request still not searchable"
    )


class SearchFilters(_Strict):
    session_id: Id | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    speaker: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @field_validator("time_from", "time_to", mode="before")
    @classmethod
    def _parse_ts(cls, v: Any) -> datetime | None:
        if v is None:
            return None
        if not isinstance(v, str | datetime):
            raise ValueError("must be a timestamp string")
        try:
            return parse_timestamp(v)
        except (TimestampError, TypeError) as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _ordered(self) -> SearchFilters:
        if self.time_from and self.time_to and self.time_from > self.time_to:
            raise ValueError("time_from is after time_to")
        return self


class SearchRequest(_Strict):
    user_id: Id
    query: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    limit: int = Field(default=10, ge=1, le=100)
    filters: SearchFilters | None = None
    strategy: Literal["hybrid", "embedding", "bm25"] = "hybrid"
    expand_links: bool = Field(
        default=False, description="also return the memories linked to each hit (link job)"
    )
    explain: bool = Field(
        default=False, description="each result's vector, BM25 and fused scores (`scores`)"
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is blank")
        return v


class Memory(BaseModel):
    id: str
    memory: str
    timestamp: datetime
    session_id: str
    source_message_ids: list[str]
    metadata: Metadata
    speaker: str | None = None
    kind: str = "message"
    importance: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, r: dict) -> Memory:
        return cls(
            id=r["id"],
            memory=r["text"],
            timestamp=r["ts"],
            session_id=r["session_id"],
            source_message_ids=list(r["source_message_ids"]),
            metadata=r["metadata"] or {},
            speaker=r["speaker"],
            kind=r["kind"],
            importance=r["importance"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )


class LinkedMemory(Memory):
    reason: str
    link_score: float


class ScoreParts(BaseModel):
    """Where a result's score came from; None where that ranking did not return it."""

    vector: float | None = Field(description="similarity in the vector index")
    bm25: float | None = Field(description="BM25 score")
    fused: float | None = Field(description="hybrid: the fused score, before the rerank signals")


class ScoredMemory(Memory):
    score: float
    linked: list[LinkedMemory] | None = Field(
        default=None, description="with expand_links: memories linked to this one"
    )
    scores: ScoreParts | None = Field(default=None, description="with explain")


class SearchResponse(BaseModel):
    results: list[ScoredMemory]
    took_ms: float

    @classmethod
    def from_search(cls, res: dict, expand_links: bool) -> SearchResponse:
        """The retrieval component's answer (rows with `score`, `scores` when explained, and
        `linked` rows)."""
        return cls(
            results=[
                ScoredMemory(
                    **Memory.from_row(r).model_dump(),
                    score=r["score"],
                    scores=ScoreParts(**r["scores"]) if "scores" in r else None,
                    linked=(
                        [
                            LinkedMemory(
                                **Memory.from_row(x).model_dump(),
                                reason=x["reason"],
                                link_score=x["link_score"],
                            )
                            for x in r.get("linked", [])
                        ]
                        if expand_links
                        else None
                    ),
                )
                for r in res["results"]
            ],
            took_ms=res["took_ms"],
        )


class MemoryList(BaseModel):
    memories: list[Memory]
    next_cursor: str | None


class MemoryPatch(_Strict):
    memory: Annotated[str, StringConstraints(min_length=1, max_length=32_000)] | None = None
    metadata: Metadata | None = None
    importance: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _something(self) -> MemoryPatch:
        if self.memory is None and self.metadata is None and self.importance is None:
            raise ValueError("nothing to change: give memory, metadata or importance")
        if self.memory is not None and not self.memory.strip():
            raise ValueError("memory is blank")
        return self


class MessageCounts(BaseModel):
    received: int
    processed: int = Field(description="turned into memories")
    pending: int = Field(description="stored, not yet taken by the worker")
    buffered: int = Field(default=0, description="in the session's topic buffers")
    failed: int


class PipelineCounts(BaseModel):
    segments: int = Field(description="topic segments cut so far")
    flushes: int = Field(description="short-term buffers turned into memories")


class TokenCounts(BaseModel):
    raw: int
    compressed: int
    llm_input: int
    llm_output: int
    llm_calls: int
    compression_ratio: float | None = Field(
        default=None, description="compressed / raw tokens of compressed messages"
    )

    @classmethod
    def from_session(cls, s: dict) -> TokenCounts:
        """From a `sessions` row's counters."""
        ratio = (
            round(s["compressed_tokens"] / s["raw_tokens"], 4)
            if s["compressed_tokens"] and s["raw_tokens"]
            else None
        )
        return cls(
            raw=s["raw_tokens"],
            compressed=s["compressed_tokens"],
            llm_input=s["llm_input_tokens"],
            llm_output=s["llm_output_tokens"],
            llm_calls=s["llm_calls"],
            compression_ratio=ratio,
        )


class SessionStatus(BaseModel):
    session_id: str
    user_id: str
    messages: MessageCounts
    memories: int
    tokens: TokenCounts
    pipeline: PipelineCounts | None = None
    llm: dict | None = Field(
        default=None, description="LLM work: waiting and failed extractions, summary state"
    )
    summary: str | None
    metadata: Metadata
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_status(
        cls, user_id: str, session_id: str, st: dict, llm: dict | None
    ) -> SessionStatus:
        """From the store's session status ({session: row, counts, memories}) and LLM work."""
        s = st["session"]
        return cls(
            session_id=session_id,
            user_id=user_id,
            messages=MessageCounts(**st["counts"]),
            memories=st["memories"],
            tokens=TokenCounts.from_session(s),
            pipeline=PipelineCounts(segments=s["segments"], flushes=s["flushes"]),
            llm=llm,
            summary=s["summary"],
            metadata=s["metadata"] or {},
            created_at=s["created_at"],
            updated_at=s["updated_at"],
        )


# --- the memory viewer's reads ------------------------------------------------------------------


class UserSummary(BaseModel):
    user_id: str
    created_at: datetime
    sessions: int
    messages: int
    memories: int


class UserList(BaseModel):
    users: list[UserSummary]
    next_after: str | None = Field(description="pass as `after` for the next page; None: last")


class SessionSummary(BaseModel):
    """One session in a user's list: pipeline status, tokens, memories."""

    session_id: str
    messages: MessageCounts
    memories: int
    tokens: TokenCounts
    pipeline: PipelineCounts
    summary: str | None
    metadata: Metadata
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, r: dict) -> SessionSummary:
        """From a row of the viewer's session list (the session and its counts together)."""
        return cls(
            session_id=r["session_id"],
            messages=MessageCounts(
                **{k: r[k] for k in ("received", "processed", "pending", "buffered", "failed")}
            ),
            memories=r["memories"],
            tokens=TokenCounts.from_session(r),
            pipeline=PipelineCounts(segments=r["segments"], flushes=r["flushes"]),
            summary=r["summary"],
            metadata=r["metadata"] or {},
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class StoredMessageView(BaseModel):
    """A message as stored, with where the pipeline is with it."""

    message_id: str
    seq: int
    role: str
    name: str | None
    content: str
    timestamp: datetime
    status: Literal["pending", "buffered", "done", "failed"]
    attempts: int
    last_error: str | None
    compressed: str | None
    raw_tokens: int | None
    compressed_tokens: int | None
    received_at: datetime
    processed_at: datetime | None

    @classmethod
    def from_row(cls, r: dict) -> StoredMessageView:
        return cls(
            **{k: v for k, v in r.items() if k not in ("ts", "session_id")}, timestamp=r["ts"]
        )


class MessageList(BaseModel):
    messages: list[StoredMessageView]
    next_after_seq: int | None = Field(description="pass as `after_seq` for more; None: last")


class MemoryLinkView(BaseModel):
    memory: Memory
    reason: str
    link_score: float


class Revision(BaseModel):
    revision: int
    old_text: str
    new_text: str
    old_source_ids: list[str]
    merged_ids: list[str]
    job_id: str | None
    created_at: datetime


class Tombstone(BaseModel):
    id: str
    entry: Metadata = Field(description="the removed memory's row")
    action: str
    reason: str
    superseded_by: str | None
    job_id: str | None
    created_at: datetime


class MemoryDetails(BaseModel):
    """A memory with where it came from and what happened to it."""

    memory: Memory | None = Field(description="None when the memory was removed")
    removed: Tombstone | None = Field(description="its tombstone, when it was removed")
    sources: list[StoredMessageView]
    links: list[MemoryLinkView]
    revisions: list[Revision]
    tombstones: list[Tombstone] = Field(
        description="its own tombstone and those of the memories it superseded"
    )


class TombstoneList(BaseModel):
    tombstones: list[Tombstone]


class FeedMemory(Memory):
    user_id: str


class Feed(BaseModel):
    memories: list[FeedMemory] = Field(description="in the order they were written")
    cursor: str | None = Field(description="pass back to get only what was written since")


class GrowthPoint(BaseModel):
    start: datetime
    memories: int


class MemoryGrowth(BaseModel):
    bucket: Literal["minute", "hour", "day"]
    points: list[GrowthPoint]


class Deleted(BaseModel):
    deleted: bool = True
    id: str


class ImportResult(BaseModel):
    user_id: str
    imported: dict[str, int]  # records loaded per kind of the export


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


JobKind = Literal["consolidate", "link", "reembed", "reextract", "rollback"]
_PARAMS = (
    "decider", "linker", "top_k", "min_score", "min_ratio", "model", "prompt", "compress_rate",
    "no_compress", "llm_model", "no_llm", "entry_unit", "activate",
)  # fmt: skip


class JobRequest(_Strict):
    """POST /v1/jobs. `rollback` switches searches (and the memory version served) back to the
    previous index generation; `reextract` rebuilds every memory from the raw messages into a
    new memory version (defaults: what the service extracts with now)."""

    kind: JobKind
    user_id: Id | None = Field(default=None, description="one user; omitted: everyone")
    job_id: str | None = Field(default=None, description="resume this job instead")
    decider: Annotated[str, StringConstraints(pattern=r"^(dedup|llm)$")] | None = None
    linker: Annotated[str, StringConstraints(pattern=r"^(similarity|llm)$")] | None = None
    top_k: int | None = Field(default=None, ge=1, le=50)
    min_score: float | None = Field(default=None, ge=-1, le=1)
    min_ratio: float | None = Field(default=None, gt=0, le=1)
    model: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    # reextract
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] | None = Field(
        default=None, description="reextract: system prompt of the LLM extraction"
    )
    compress_rate: float | None = Field(
        default=None, gt=0, le=1, description="reextract: LLMLingua-2 rate (needs the Compressor)"
    )
    no_compress: bool | None = Field(default=None, description="reextract: no compression")
    llm_model: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = Field(
        default=None, description="reextract: this model on the service's OpenAI-compatible LLM"
    )
    no_llm: bool | None = Field(default=None, description="reextract: extractive entries")
    entry_unit: Literal["message", "message_ctx", "window2", "window3"] | None = None
    activate: bool | None = Field(
        default=None, description="reextract: switch to the new version when built (default)"
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("prompt is blank")
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> JobRequest:
        if self.kind in ("reembed", "reextract", "rollback") and self.user_id is not None:
            raise ValueError(f"a {self.kind} job covers every user: user_id is not allowed")
        if self.kind == "reembed" and self.model is None and self.job_id is None:
            raise ValueError("a reembed job needs model")
        allowed = {
            "consolidate": {"decider", "top_k", "min_score", "min_ratio"},
            "link": {"linker", "top_k", "min_score"},
            "reembed": {"model"},
            "reextract": {
                "prompt", "compress_rate", "no_compress", "llm_model", "no_llm", "entry_unit",
                "activate",
            },
            "rollback": set(),
        }[self.kind]  # fmt: skip
        given = {k for k in _PARAMS if getattr(self, k) is not None}
        if given - allowed:
            raise ValueError(f"{sorted(given - allowed)} do not apply to a {self.kind} job")
        if self.compress_rate is not None and self.no_compress:
            raise ValueError("compress_rate and no_compress exclude each other")
        if self.llm_model is not None and self.no_llm:
            raise ValueError("llm_model and no_llm exclude each other")
        if self.job_id is not None and given:
            raise ValueError("a resumed job keeps its parameters: give only kind and job_id")
        return self

    def job_params(self) -> dict:
        """The parameters as the job's command-line options take them (switches as True)."""
        out = {
            k: getattr(self, k)
            for k in _PARAMS
            if k != "activate" and getattr(self, k) not in (None, False)
        }
        if self.activate is False:
            out["no_activate"] = True
        return out


class JobStatus(BaseModel):
    id: str
    kind: str
    user_id: str | None
    status: str
    stage: str | None
    total: int
    done: int
    rate_per_s: float | None
    eta_s: float | None
    params: Metadata
    result: Metadata
    error: str | None
    submission_id: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobStatus]


# Keys and the audit log.

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
Tenant = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=TENANT_PATTERN)]


class KeyCreate(_Strict):
    tenant: Tenant
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    expires_at: datetime | None = Field(default=None, description="no expiry when omitted")
    rate_limit_per_min: int | None = Field(
        default=None, ge=1, le=1_000_000, description="default: MEMSERVE_RATE_LIMIT_PER_MIN"
    )

    @field_validator("expires_at")
    @classmethod
    def _future(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        if v <= datetime.now(UTC):
            raise ValueError("expires_at is in the past")
        return v


class KeyInfo(BaseModel):
    """An API key as listed: never the secret itself."""

    id: str
    tenant: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rate_limit_per_min: int | None = None


class KeyCreated(KeyInfo):
    """The answer to creating a key: the only time its secret is shown."""

    key: str = Field(description="the secret: shown only in this answer")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class AuditEntry(BaseModel):
    """One change: who (key, tenant), what (action, object ids), to whom (user id), when."""

    id: int
    at: datetime
    key_id: str
    tenant: str
    user_id: str | None
    action: str
    object_ids: list[str]
    request_id: str | None


class AuditList(BaseModel):
    entries: list[AuditEntry]
    next_after: int | None = Field(
        default=None, description="more rows: pass as `after` for the next page"
    )
