"""Sensory and short-term buffers of one user session, as a pure, JSON-serialisable state.

Policy (LightMem's, without its role assumptions):
- Messages enter the sensory buffer while its tokens stay within `sensory_max_tokens`. When the
  next message does not fit, the buffer is cut into topic segments by a caller-supplied `cut`
  (boundaries from `segmentation.segment_boundaries`); finished segments move on, the last one
  stays as the carried-over tail. A message alone larger than the limit is still taken.
- Segments enter the short-term buffer; when the next segment would push it past
  `short_term_max_tokens`, the buffer is flushed (one LLM call / one extraction per flush).
- `flush` forces everything out: the sensory buffer including its tail, then the short-term one.

The state holds everything needed to resume (the worker persists `to_json()` per user+session in
the same transaction that marks messages done), and the policy is deterministic: the same
state, messages and cut give the same flushes. Messages at or below `last_seq` are ignored, so a
redelivered batch is never processed twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from serve_app.pipeline.segmentation import split_segments

STATE_VERSION = 1


@dataclass(frozen=True)
class BufferConfig:
    sensory_max_tokens: int = 512
    # LightMem hard-codes 512 for the short-term buffer.
    short_term_max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.sensory_max_tokens < 1 or self.short_term_max_tokens < 1:
            raise ValueError("buffer thresholds must be >= 1 token")


@dataclass(frozen=True)
class BufferedMessage:
    message_id: str
    seq: int
    text: str  # what segmentation and memory construction read (compressed text when on)
    tokens: int  # tokens of `text`, as counted by the caller (cl100k_base)
    role: str
    name: str | None
    ts: str  # ISO 8601
    original: str | None = None  # the uncompressed text, when it differs from `text`
    # The index text of the message's extractive entry, when known at intake: the cut embeds
    # it instead of `text`, so the entry write finds its vector cached (states saved without
    # it load with None: the cut embeds `text`).
    index_text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BufferedMessage:
        return cls(**data)


@dataclass(frozen=True)
class Segment:
    topic_index: int  # 0, 1, 2 ... per session, in order of emission
    messages: tuple[BufferedMessage, ...]

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        return {"topic_index": self.topic_index, "messages": [m.to_json() for m in self.messages]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(
            topic_index=data["topic_index"],
            messages=tuple(BufferedMessage.from_json(m) for m in data["messages"]),
        )


@dataclass(frozen=True)
class ShortTermFlush:
    """One flushed short-term buffer: the unit of memory construction (one LLM call)."""

    flush_index: int  # 0, 1, 2 ... per session
    segments: tuple[Segment, ...]

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.segments)

    @property
    def messages(self) -> list[BufferedMessage]:
        return [m for s in self.segments for m in s.messages]

    def topics(self) -> dict[str, int]:
        """Message id -> topic index."""
        return {m.message_id: s.topic_index for s in self.segments for m in s.messages}


Cut = Callable[[Sequence[BufferedMessage]], Sequence[int]]
AsyncCut = Callable[[Sequence[BufferedMessage]], Awaitable[Sequence[int]]]


@dataclass
class SessionBuffers:
    config: BufferConfig = field(default_factory=BufferConfig)
    last_seq: int = -1
    next_topic: int = 0
    next_flush: int = 0
    pending: list[BufferedMessage] = field(default_factory=list)
    sensory: list[BufferedMessage] = field(default_factory=list)
    short_term: list[Segment] = field(default_factory=list)

    # -- serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The resumable state; thresholds are configuration and are not part of it."""
        return {
            "version": STATE_VERSION,
            "last_seq": self.last_seq,
            "next_topic": self.next_topic,
            "next_flush": self.next_flush,
            "pending": [m.to_json() for m in self.pending],
            "sensory": [m.to_json() for m in self.sensory],
            "short_term": [s.to_json() for s in self.short_term],
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any] | None, config: BufferConfig | None = None
    ) -> SessionBuffers:
        config = config or BufferConfig()
        if not data:
            return cls(config=config)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown buffer state version {data.get('version')!r}")
        return cls(
            config=config,
            last_seq=data["last_seq"],
            next_topic=data["next_topic"],
            next_flush=data["next_flush"],
            pending=[BufferedMessage.from_json(m) for m in data["pending"]],
            sensory=[BufferedMessage.from_json(m) for m in data["sensory"]],
            short_term=[Segment.from_json(s) for s in data["short_term"]],
        )

    # -- token counts --------------------------------------------------------------------------
    @property
    def sensory_tokens(self) -> int:
        return sum(m.tokens for m in self.sensory)

    @property
    def short_term_tokens(self) -> int:
        return sum(s.tokens for s in self.short_term)

    def held(self) -> list[BufferedMessage]:
        """Every message the buffers hold, in seq order."""
        return [
            *(m for segment in self.short_term for m in segment.messages),
            *self.sensory,
            *self.pending,
        ]

    @property
    def is_empty(self) -> bool:
        return not (self.pending or self.sensory or self.short_term)

    # -- step API (for callers whose cut is remote/async) --------------------------------------
    def push(self, messages: Sequence[BufferedMessage]) -> int:
        """Queue new messages in seq order; returns how many were new (not seen before)."""
        fresh = sorted((m for m in messages if m.seq > self.last_seq), key=lambda m: m.seq)
        seqs = [m.seq for m in fresh]
        if len(set(seqs)) != len(seqs):
            raise ValueError("duplicate seq in one batch of messages")
        self.pending.extend(fresh)
        if fresh:
            self.last_seq = fresh[-1].seq
        return len(fresh)

    def next_window(self) -> list[BufferedMessage] | None:
        """Fill the sensory buffer from pending; return it when it must be cut, else None."""
        limit = self.config.sensory_max_tokens
        while self.pending:
            msg = self.pending[0]
            if self.sensory and self.sensory_tokens + msg.tokens > limit:
                return list(self.sensory)
            self.sensory.append(self.pending.pop(0))
        return None

    def apply_cut(self, boundaries: Sequence[int], *, final: bool = False) -> list[ShortTermFlush]:
        """Cut the sensory buffer at `boundaries`; keep the tail unless `final`."""
        finished, tail = split_segments(self.sensory, boundaries, keep_tail=not final)
        self.sensory = list(tail)
        flushes: list[ShortTermFlush] = []
        for messages in finished:
            segment = Segment(self.next_topic, tuple(messages))
            self.next_topic += 1
            if self.short_term and self.short_term_tokens + segment.tokens > (
                self.config.short_term_max_tokens
            ):
                flushes.append(self._flush_short_term())
            self.short_term.append(segment)
        return flushes

    def final_window(self) -> list[BufferedMessage] | None:
        """What is left in the sensory buffer once pending is drained (for `flush`)."""
        if self.pending:
            raise RuntimeError("drain pending messages (next_window/apply_cut) before flushing")
        return list(self.sensory) if self.sensory else None

    def flush_short_term(self) -> list[ShortTermFlush]:
        return [self._flush_short_term()] if self.short_term else []

    def _flush_short_term(self) -> ShortTermFlush:
        flush = ShortTermFlush(self.next_flush, tuple(self.short_term))
        self.next_flush += 1
        self.short_term = []
        return flush

    # -- convenience loops ---------------------------------------------------------------------
    def add(self, messages: Sequence[BufferedMessage], cut: Cut) -> list[ShortTermFlush]:
        """Take new messages; return the short-term buffers that filled up and were flushed."""
        self.push(messages)
        flushes: list[ShortTermFlush] = []
        while (window := self.next_window()) is not None:
            flushes += self.apply_cut(cut(window))
        return flushes

    def flush(self, cut: Cut) -> list[ShortTermFlush]:
        """Force everything out: pending, the sensory buffer and its tail, the short-term buffer."""
        flushes = self.add([], cut)
        if (window := self.final_window()) is not None:
            flushes += self.apply_cut(cut(window), final=True)
        return flushes + self.flush_short_term()

    async def add_async(
        self, messages: Sequence[BufferedMessage], cut: AsyncCut
    ) -> list[ShortTermFlush]:
        self.push(messages)
        flushes: list[ShortTermFlush] = []
        while (window := self.next_window()) is not None:
            flushes += self.apply_cut(await cut(window))
        return flushes

    async def flush_async(self, cut: AsyncCut) -> list[ShortTermFlush]:
        flushes = await self.add_async([], cut)
        if (window := self.final_window()) is not None:
            flushes += self.apply_cut(await cut(window), final=True)
        return flushes + self.flush_short_term()
