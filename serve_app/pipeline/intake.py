"""Intake and the topic cut, shared by the ingest worker and re-extraction.

- `intake`: stored messages -> buffered messages (compressed when a compressor is given, the
  original kept beside), with the token counts the session counters add up;
- `Cutter`: the `cut` callable of `SessionBuffers` (pipeline/buffers.py): the embedder's vectors,
  and the compressor's attention when on, through `segment_boundaries`.

Embedding each message once: with compression off, no LLM and a per-message entry unit,
intake gives each buffered message the index text of its future extractive entry (the worker's
`cut_on_entry_text`, on by default; settings.py says what it costs segmentation), and the cut
embeds that text, with thresholds of its own; the entry write then takes the vector from the
cut's `VectorCache` (keyed by text, so a text that differs, e.g. after a change of entry unit,
is simply embedded again). With compression on, the cut reads the compressed text (LightMem
segments what it compresses) and entries, built from the original text, are embedded at the
write.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from serve_app.model.messages import StoredMessage
from serve_app.pipeline.buffers import BufferedMessage
from serve_app.pipeline.compression import Compressed
from serve_app.pipeline.extractive import message_index_text
from serve_app.pipeline.segmentation import SegmentationConfig, segment_boundaries
from serve_app.pipeline.tokens import count_tokens

Embed = Callable[[list[str]], Awaitable[Sequence]]
Compress = Callable[[list[str]], Awaitable[list[Compressed]]]
Attend = Callable[[list[list[str]]], Awaitable[list[list[float]]]]

# Segmentation embeds a carried-over tail again at the next cut: remember recent vectors.
SEGMENT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Intook:
    """One message as the buffers take it, and what intake learned about it."""

    buffered: BufferedMessage
    compressed: str | None  # the compressor's text; None when compression is off
    raw_tokens: int  # tokens of the original text


async def intake(
    messages: Sequence[StoredMessage],
    compress: Compress | None,
    *,
    unit: str | None = None,
    previous: Mapping[tuple[str, str], StoredMessage] | None = None,
) -> list[Intook]:
    """Buffered messages in the order given (one compressor call for all of them).

    `unit` (compression off only): each message carries the index text of its extractive entry
    of that unit; its context is the message before it in `messages` of its session (sessions
    in seq order), else `previous[(user, session)]`, the session's message before them."""
    results: list[Compressed | None] = [None] * len(messages)
    if compress is not None and messages:
        results = list(await compress([m.content for m in messages]))
    before = dict(previous or {})
    out = []
    for m, c in zip(messages, results, strict=True):
        index_text = None
        if unit is not None and c is None:
            key = (m.user_id, m.session_id)
            index_text = message_index_text(m, before.get(key), unit)
            before[key] = m
        raw = c.tokens_in if c is not None else count_tokens(m.content)
        text = c.compressed if c is not None else m.content
        buffered = BufferedMessage(
            message_id=m.message_id,
            seq=m.seq,
            text=text,
            tokens=c.tokens_out if c is not None else raw,
            role=m.role,
            name=m.name,
            ts=m.ts.isoformat(),
            original=m.content if text != m.content else None,
            index_text=index_text,
        )
        out.append(Intook(buffered, c.compressed if c is not None else None, raw))
    return out


def stored_message(user_id: str, session_id: str, m: BufferedMessage) -> StoredMessage:
    """The stored message a buffered one was made from (the buffers keep every field entries
    read), so a flush needs no second read of its messages."""
    return StoredMessage(
        user_id=user_id,
        session_id=session_id,
        message_id=m.message_id,
        seq=m.seq,
        role=m.role,
        name=m.name,
        content=m.original if m.original is not None else m.text,
        ts=datetime.fromisoformat(m.ts),
    )


class VectorCache:
    """Text -> embedding, least recently used out (hand-written: no async LRU in our deps)."""

    def __init__(self, size: int = SEGMENT_CACHE_SIZE) -> None:
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    async def embed(self, texts: list[str], embed: Embed) -> np.ndarray:
        # Take what is cached before awaiting: concurrent sessions fill the cache meanwhile
        # and may evict the very vectors this call relies on.
        found = {t: self._data[t] for t in texts if t in self._data}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, vector in zip(missing, await embed(missing), strict=True):
                found[text] = self._data[text] = np.asarray(vector, dtype=np.float32)
        for t in found:
            if t in self._data:
                self._data.move_to_end(t)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def peek(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of `texts` (no await: the caller holds them before others evict)."""
        return {t: self._data[t] for t in texts if t in self._data}


class Cutter:
    """Topic boundaries of a sensory window; safe to share between concurrent sessions.

    A window whose messages all carry their entry's index text (intake's `unit`) is cut on
    those texts with `entry_segmentation`'s thresholds, so the entry write reuses the vectors;
    any other window on the plain (or compressed) texts with `segmentation`'s."""

    def __init__(
        self,
        embed: Embed,
        segmentation: SegmentationConfig,
        attend: Attend | None = None,
        cache_size: int = SEGMENT_CACHE_SIZE,
        entry_segmentation: SegmentationConfig | None = None,
    ) -> None:
        self.embed = embed
        self.attend = attend
        self.segmentation = segmentation
        self.entry_segmentation = entry_segmentation or segmentation
        self.vectors = VectorCache(cache_size)

    async def prefetch(self, messages: Sequence[BufferedMessage]) -> None:
        """Embed, in one call, what the cuts of these messages will read: the embedder gets
        full batches instead of one window at a time (a window waits for the one before)."""
        # Per message: one without an index text (a blank one) sends its windows to the plain
        # texts, which are then embedded at the cut.
        texts = [m.index_text or m.text for m in messages]
        if texts:
            await self.vectors.embed(texts, self.embed)

    async def __call__(self, window: Sequence[BufferedMessage]) -> list[int]:
        if len(window) < 2:
            return []
        on_entries = all(m.index_text for m in window)
        config = self.entry_segmentation if on_entries else self.segmentation
        embedded = [m.index_text if on_entries else m.text for m in window]
        if self.attend is None:
            vectors = await self.vectors.embed(embedded, self.embed)
            return segment_boundaries(vectors, None, config)
        vectors, attention = await asyncio.gather(
            self.vectors.embed(embedded, self.embed), self.attend([[m.text for m in window]])
        )
        return segment_boundaries(vectors, attention[0], config)
