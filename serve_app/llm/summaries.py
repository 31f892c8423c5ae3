"""Session summaries, Claude-Mem style: one structured summary per session, made when the
session is flushed at its end or on request, from what extraction already produced (topic
summaries and facts) rather than from the raw messages, so it costs one short call.

Claude-Mem's fields (request, investigated, learned, completed, next_steps) are for coding
sessions; a conversation keeps their shape as title, summary, topics, people, key events
with dates, and open items (plans, promises, questions left open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from serve_app.llm.base import ChatMessage, ParseError
from serve_app.llm.jsonreply import loads_object, pydantic_errors
from serve_app.llm.resilience import LLMResult, ResilientLLM

SYSTEM_PROMPT = """\
You write the summary of one conversation session for a long-term memory, from notes \
taken during the session (topic summaries and facts, with their dates).
Use names, never pronouns, and absolute dates (YYYY-MM-DD).
Give: a short title; a summary of three to five sentences; the topics discussed; the people \
involved; the key events with their dates (null if unknown); open items: plans, promises and \
questions left open.
Reply with JSON only."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


@dataclass(frozen=True)
class SessionNote:
    ts: datetime
    text: str
    kind: str = "fact"  # "summary" (a topic summary) or "fact"
    importance: float = 0.5


@dataclass(frozen=True)
class KeyEvent:
    text: str
    date: date | None


@dataclass(frozen=True)
class SessionSummary:
    title: str
    summary: str
    topics: tuple[str, ...]
    participants: tuple[str, ...]
    key_events: tuple[KeyEvent, ...]
    open_items: tuple[str, ...]

    def as_text(self) -> str:
        """The searchable text of the summary entry."""
        parts = [self.title, self.summary]
        if self.topics:
            parts.append("Topics: " + ", ".join(self.topics))
        parts.extend(
            f"{e.date.isoformat()}: {e.text}" if e.date else e.text for e in self.key_events
        )
        if self.open_items:
            parts.append("Open: " + "; ".join(self.open_items))
        return "\n".join(p for p in parts if p)


@dataclass(frozen=True)
class SummaryRequest:
    messages: list[ChatMessage]
    schema: dict
    notes_used: int
    notes_dropped: int


def summary_schema() -> dict:
    strings = {"type": "array", "items": {"type": "string", "maxLength": 120}, "maxItems": 12}
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 120},
            "summary": {"type": "string", "maxLength": 1200},
            "topics": strings,
            "participants": strings,
            "key_events": {
                "type": "array",
                "maxItems": 12,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "maxLength": 300},
                        "date": {
                            "anyOf": [{"type": "string", "pattern": DATE_PATTERN}, {"type": "null"}]
                        },
                    },
                    "required": ["text", "date"],
                    "additionalProperties": False,
                },
            },
            "open_items": strings,
        },
        "required": ["title", "summary", "topics", "participants", "key_events", "open_items"],
        "additionalProperties": False,
    }


def select_notes(notes: Sequence[SessionNote], max_chars: int) -> list[SessionNote]:
    """All topic summaries first, then facts by importance, until `max_chars`; back in time
    order. A long session thus keeps its outline and its most important details."""
    ranked = sorted(
        enumerate(notes), key=lambda p: (p[1].kind != "summary", -p[1].importance, p[0])
    )
    kept: list[tuple[int, SessionNote]] = []
    used = 0
    for i, n in ranked:
        cost = len(n.text) + 20
        if used + cost > max_chars:
            continue
        kept.append((i, n))
        used += cost
    return [n for _, n in sorted(kept, key=lambda p: (p[1].ts, p[0]))]


def build_summary_request(
    notes: Sequence[SessionNote],
    *,
    participants: Sequence[str] = (),
    max_note_chars: int = 12_000,
) -> SummaryRequest:
    if not notes:
        raise ValueError("nothing to summarise: no notes")
    kept = select_notes(notes, max_note_chars)
    lines = []
    if participants:
        lines.append("Participants: " + ", ".join(participants))
    for n in kept:
        tag = "topic" if n.kind == "summary" else "fact"
        lines.append(f"- {n.ts.date().isoformat()} [{tag}] {' '.join(n.text.split())}")
    return SummaryRequest(
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "\n".join(lines)},
        ],
        schema=summary_schema(),
        notes_used=len(kept),
        notes_dropped=len(notes) - len(kept),
    )


class _RawEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    date: str | None = None


class _RawSummary(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str = ""
    summary: str
    topics: list[str] = []
    participants: list[str] = []
    key_events: list[_RawEvent] = []
    open_items: list[str] = []


def _strings(values: list[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for v in values:
        v = " ".join(v.split())
        if v:
            out.setdefault(v, None)
    return tuple(out)


def _date(raw: str | None) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.strip()[:10])
    except ValueError:
        return None


def parse_session_summary(text: str) -> SessionSummary:
    try:
        raw = _RawSummary.model_validate(loads_object(text))
    except ValidationError as e:
        raise ParseError(f"the JSON does not match the schema: {pydantic_errors(e)}") from None
    summary = " ".join(raw.summary.split())
    if not summary:
        raise ParseError("summary is empty")
    return SessionSummary(
        title=" ".join(raw.title.split()),
        summary=summary,
        topics=_strings(raw.topics),
        participants=_strings(raw.participants),
        key_events=tuple(
            KeyEvent(" ".join(e.text.split()), _date(e.date))
            for e in raw.key_events
            if e.text.strip()
        ),
        open_items=_strings(raw.open_items),
    )


async def summarize_session(
    llm: ResilientLLM,
    notes: Sequence[SessionNote],
    *,
    participants: Sequence[str] = (),
    max_note_chars: int = 12_000,
    max_tokens: int = 1024,
    temperature: float = 0.0,
) -> LLMResult[SessionSummary]:
    """Raises `LLMUnavailable` (try later) or `LLMOutputInvalid` (mark the request failed)."""
    request = build_summary_request(notes, participants=participants, max_note_chars=max_note_chars)
    return await llm.call(
        request.messages,
        request.schema,
        parse_session_summary,
        max_tokens=max_tokens,
        temperature=temperature,
    )
