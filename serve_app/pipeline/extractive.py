"""Memory entries built from stored messages without an LLM: drafts, then rows.

Units (compared on LoCoMo by benchmarks/locomo_offline.py):
- "message": one entry per message.
- "message_ctx": one entry per message; the previous turn of the session is added to the
  index text only, so search can match a reply by what it replies to. The entry cites only its
  own message: the memory text states only that message, and citing the context would also
  spend the caller's recall budget on a message the entry does not state.
- "window2" / "window3": one entry per run of 2 or 3 consecutive messages; cites all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Literal

from serve_app.model.entries import EntryContext, EntryRow
from serve_app.model.messages import StoredMessage

EntryUnit = Literal["message", "message_ctx", "window2", "window3"]
ENTRY_UNITS: tuple[str, ...] = ("message", "message_ctx", "window2", "window3")
DEFAULT_UNIT: EntryUnit = "message_ctx"
# Context beyond this many characters adds little for matching and dilutes the embedding.
CONTEXT_CHARS = 300


@dataclass
class EntryDraft:
    session_id: str
    text: str  # the memory as shown to users
    index_text: str  # what is embedded and BM25-indexed
    ts: datetime
    speaker: str | None
    source_message_ids: list[str]
    metadata: dict = field(default_factory=dict)


def date_label(ts: datetime) -> str:
    # Spelled-out month and weekday match how questions name dates ("in May 2023").
    return f"{ts.day} {ts:%B %Y}, {ts:%A}"


def message_line(m: StoredMessage) -> str:
    return f"{m.speaker}: {m.content.strip()}"


def uses_previous(unit: str) -> bool:
    """Whether entries of `unit` read the message before a batch (callers skip reading it)."""
    return unit == "message_ctx"


def message_index_text(m: StoredMessage, previous: StoredMessage | None, unit: str) -> str | None:
    """The index text of `m`'s entry for a per-message unit, as `build_entries` writes it when
    `previous` is the message before `m`; None for window units and empty messages (their
    entries' texts span several messages, or there is no entry)."""
    if unit not in ("message", "message_ctx") or not m.content.strip():
        return None
    return _single(m, previous, unit, with_date=True).index_text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _single(
    m: StoredMessage, previous: StoredMessage | None, unit: str, with_date: bool
) -> EntryDraft:
    prefix = f"[{date_label(m.ts)}] " if with_date else ""
    text = prefix + message_line(m)
    index_text = text
    metadata: dict = {"unit": unit}
    if uses_previous(unit) and previous is not None:
        index_text = f"{text}\n(after {_clip(message_line(previous), CONTEXT_CHARS)})"
        metadata["context_message_ids"] = [previous.message_id]
    return EntryDraft(
        session_id=m.session_id,
        text=text,
        index_text=index_text,
        ts=m.ts,
        speaker=m.speaker,
        source_message_ids=[m.message_id],
        metadata=metadata,
    )


def _window(ms: Sequence[StoredMessage], unit: str, with_date: bool) -> EntryDraft:
    prefix = f"[{date_label(ms[0].ts)}] " if with_date else ""
    text = prefix + "\n".join(message_line(m) for m in ms)
    speakers = {m.speaker for m in ms}
    return EntryDraft(
        session_id=ms[0].session_id,
        text=text,
        index_text=text,
        ts=ms[0].ts,
        speaker=speakers.pop() if len(speakers) == 1 else None,
        source_message_ids=[m.message_id for m in ms],
        metadata={"unit": unit},
    )


def build_entries(
    messages: Sequence[StoredMessage],
    previous: StoredMessage | None,
    *,
    unit: EntryUnit = DEFAULT_UNIT,
    with_date: bool = True,
) -> list[EntryDraft]:
    """Entries for `messages` (in session order). `previous` is the already processed message
    just before messages[0] in its session, used as context for the first one.

    Per-message units give the same entries however the messages are split into batches;
    windows restart at each batch, so the caller should hand over whole sessions or flushes.
    """
    if unit not in ENTRY_UNITS:
        raise ValueError(f"unknown entry unit {unit!r}; choose one of {ENTRY_UNITS}")
    entries: list[EntryDraft] = []
    for session_id, group in groupby(messages, key=lambda m: m.session_id):
        ms = [m for m in group if m.content.strip()]
        if not ms:
            continue
        if unit.startswith("window"):
            size = int(unit.removeprefix("window"))
            entries.extend(
                _window(ms[i : i + size], unit, with_date) for i in range(0, len(ms), size)
            )
            continue
        prev = previous if previous is not None and previous.session_id == session_id else None
        for m in ms:
            entries.append(_single(m, prev, unit, with_date))
            prev = m
    return entries


def extractive_rows(
    groups: Sequence[Sequence[StoredMessage]],
    previous: StoredMessage | None,
    ctx: EntryContext,
    *,
    unit: str,
    flush_index: int,
    topics: Mapping[str, int],
    fallback: bool = False,
) -> list[EntryRow]:
    """Extractive entries of one flushed buffer, from the ORIGINAL text (it keeps the facts).

    `groups`: its messages in seq order, split where window units restart (the worker and
    re-extraction pass one group per topic segment); `previous`: the message just before the
    first one in the session, the context of message_ctx; `topics`: message id -> topic index;
    `fallback`: the LLM's output for this buffer was unusable (recorded in the metadata).
    """
    rows: list[EntryRow] = []
    for ms in groups:
        for d in build_entries(ms, previous, unit=unit):  # type: ignore[arg-type]
            topic = topics.get(d.source_message_ids[0])
            metadata = {**d.metadata, "topic_index": topic, "flush_index": flush_index}
            if fallback:
                metadata["llm_fallback"] = "output unusable"
            rows.append(
                ctx.row(
                    kind="message",
                    key=d.source_message_ids,
                    text=d.text,
                    index_text=d.index_text,
                    ts=d.ts,
                    speaker=d.speaker,
                    source_message_ids=d.source_message_ids,
                    topic_index=topic,
                    metadata=metadata,
                )
            )
        if ms:
            previous = ms[-1]
    return rows
