"""Memory extraction: one LLM call per flushed short-term buffer.

Messages go in labelled with short ids (m1, m2, ...: fewer tokens than message UUIDs, and the
schema restricts `source_message_ids` to exactly those labels, so guided decoding cannot invent
provenance). Out come standalone facts (names instead of pronouns, absolute dates instead of
relative ones, as SimpleMem does) with keywords, entities, a date and an importance, plus a
summary of the topic. The parser maps labels back to message ids and reports every repair it
made instead of silently dropping things.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from serve_app.llm.base import ChatMessage, ParseError
from serve_app.llm.jsonreply import loads_object, pydantic_errors
from serve_app.llm.resilience import LLMResult, ResilientLLM

SYSTEM_PROMPT = """\
You turn a conversation excerpt into entries for a long-term memory.
Write each fact as one standalone sentence that is clear without the conversation:
- use names, never pronouns: the speaker's name instead of "I", "you", "she", "we";
- make relative times absolute from the message dates: "yesterday" in a message dated \
2023-05-08 becomes "on 2023-05-07", "last year" becomes "in 2022";
- keep specifics: names, places, numbers, titles, preferences, plans, feelings.
Skip greetings and small talk that carry no information.
For each fact give: source_message_ids (the ids in brackets of the messages it comes from), \
keywords (a few salient words), entities (people, places, organisations and things named), \
time (the YYYY-MM-DD date the fact refers to, or null), importance (0 to 1: how useful the fact \
is for later conversations).
Then summarise the excerpt's topic in one or two sentences.
Reply with JSON only."""

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds written into the schema. With guided decoding they bound the reply's length, so a
    model that loops (small models do) still ends with valid JSON inside max_tokens."""

    max_facts: int | None = None  # None: 2 per message + 2, at most 40
    fact_chars: int = 400
    list_items: int = 8  # keywords, entities
    item_chars: int = 60
    summary_chars: int = 600

    def facts_for(self, n_messages: int) -> int:
        return self.max_facts if self.max_facts is not None else min(40, 2 * n_messages + 2)


@dataclass(frozen=True)
class SourceMessage:
    """One message as the extraction prompt shows it."""

    message_id: str
    ts: datetime  # tz-aware; shown in its own time zone
    speaker: str
    text: str

    @classmethod
    def from_stored(cls, msg, text: str | None = None) -> SourceMessage:
        """From a `serve_app.model.messages.StoredMessage` (or anything with its fields); `text`
        overrides the content, e.g. with the compressed text."""
        return cls(
            message_id=msg.message_id,
            ts=msg.ts,
            speaker=msg.name or msg.role,
            text=msg.content if text is None else text,
        )


@dataclass(frozen=True)
class ExtractionRequest:
    messages: list[ChatMessage]
    schema: dict
    labels: dict[str, str]  # label shown to the model -> message_id


@dataclass(frozen=True)
class ExtractedFact:
    text: str
    source_message_ids: tuple[str, ...]  # real message ids, in input order
    keywords: tuple[str, ...]
    entities: tuple[str, ...]
    time: date | None
    importance: float


@dataclass(frozen=True)
class ParseReport:
    """What the parser had to fix; all zero/empty when the reply was clean."""

    unknown_source_ids: tuple[str, ...] = ()
    facts_without_source: int = 0  # dropped: no valid source id left
    empty_facts: int = 0  # dropped: no text
    duplicate_facts: int = 0  # dropped: same text twice
    importance_clamped: int = 0
    invalid_times: tuple[str, ...] = ()  # set to null

    @property
    def clean(self) -> bool:
        return self == ParseReport()


@dataclass(frozen=True)
class Extraction:
    facts: tuple[ExtractedFact, ...]
    summary: str
    report: ParseReport


def render_messages(messages: Sequence[SourceMessage], labels: Sequence[str]) -> str:
    """One header per calendar day, then `[m1] 13:56 Caroline: text` lines."""
    lines: list[str] = []
    day: date | None = None
    for label, m in zip(labels, messages, strict=True):
        d = m.ts.date()
        if d != day:
            day = d
            lines.append(f"## {d.isoformat()} ({m.ts.strftime('%A')})")
        text = " ".join(m.text.split())
        lines.append(f"[{label}] {m.ts.strftime('%H:%M')} {m.speaker}: {text}")
    return "\n".join(lines)


def extraction_schema(labels: Sequence[str], limits: ExtractionLimits | None = None) -> dict:
    lim = limits or ExtractionLimits()
    string_list = {
        "type": "array",
        "items": {"type": "string", "maxLength": lim.item_chars},
        "maxItems": lim.list_items,
    }
    fact = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": lim.fact_chars},
            "source_message_ids": {
                "type": "array",
                "items": {"type": "string", "enum": list(labels)},
                "minItems": 1,
                "maxItems": len(labels),
            },
            "keywords": string_list,
            "entities": string_list,
            "time": {"anyOf": [{"type": "string", "pattern": DATE_PATTERN}, {"type": "null"}]},
            "importance": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["text", "source_message_ids", "keywords", "entities", "time", "importance"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "facts": {"type": "array", "items": fact, "maxItems": lim.facts_for(len(labels))},
            "summary": {"type": "string", "maxLength": lim.summary_chars},
        },
        "required": ["facts", "summary"],
        "additionalProperties": False,
    }


def build_extraction_request(
    messages: Sequence[SourceMessage],
    limits: ExtractionLimits | None = None,
    system_prompt: str | None = None,
) -> ExtractionRequest:
    """`system_prompt` replaces SYSTEM_PROMPT (a memory version built with another prompt);
    the reply's JSON schema stays the same."""
    if not messages:
        raise ValueError("nothing to extract from: no messages")
    ids = [m.message_id for m in messages]
    if len(set(ids)) != len(ids):
        raise ValueError("message ids must be unique within one extraction")
    labels = [f"m{i}" for i in range(1, len(messages) + 1)]
    chat = [
        {"role": "system", "content": system_prompt or SYSTEM_PROMPT},
        {"role": "user", "content": render_messages(messages, labels)},
    ]
    return ExtractionRequest(
        messages=chat,
        schema=extraction_schema(labels, limits),
        labels=dict(zip(labels, ids, strict=True)),
    )


class _RawFact(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    source_message_ids: list[str | int]
    keywords: list[str] = []
    entities: list[str] = []
    time: str | None = None
    importance: float = 0.5

    @field_validator("importance")
    @classmethod
    def _finite(cls, v: float) -> float:
        if math.isnan(v):
            raise ValueError("importance must be a number between 0 and 1")
        return v


class _RawExtraction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    facts: list[_RawFact]
    summary: str = ""


def _label_of(raw: str | int, labels: dict[str, str]) -> str | None:
    """Accept `m3`, `[m3]`, `M3`, `3` and 3 for label m3 (small models vary the form)."""
    s = str(raw).strip().strip("[]").strip().lower()
    if s in labels:
        return s
    if s.isdigit() and f"m{s}" in labels:
        return f"m{s}"
    return None


def _parse_time(raw: str | None) -> tuple[date | None, bool]:
    """(date, ok). Accepts YYYY-MM-DD and ISO date-times (their date part)."""
    if raw is None or not raw.strip() or raw.strip().lower() == "null":
        return None, True
    s = raw.strip()
    try:
        return date.fromisoformat(s[:10]), len(s) == 10 or s[10] in "T "
    except ValueError:
        return None, False


def _clean_list(values: list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        v = " ".join(v.split())
        if v and v.lower() not in (k.lower() for k in seen):
            seen[v] = None
    return tuple(seen)


def parse_extraction(text: str, request: ExtractionRequest) -> Extraction:
    data = loads_object(text)
    try:
        raw = _RawExtraction.model_validate(data)
    except ValidationError as e:
        raise ParseError(f"the JSON does not match the schema: {pydantic_errors(e)}") from None
    order = {label: i for i, label in enumerate(request.labels)}
    unknown: list[str] = []
    invalid_times: list[str] = []
    no_source = empty = duplicates = clamped = 0
    facts: list[ExtractedFact] = []
    seen_texts: set[str] = set()
    for f in raw.facts:
        body = " ".join(f.text.split())
        if not body:
            empty += 1
            continue
        labels: set[str] = set()
        for sid in f.source_message_ids:
            label = _label_of(sid, request.labels)
            if label is None:
                unknown.append(str(sid))
            else:
                labels.add(label)
        if not labels:
            no_source += 1
            continue
        if body.lower() in seen_texts:
            duplicates += 1
            continue
        seen_texts.add(body.lower())
        when, ok = _parse_time(f.time)
        if not ok:
            invalid_times.append(str(f.time))
            when = None
        importance = min(1.0, max(0.0, f.importance))
        clamped += importance != f.importance
        facts.append(
            ExtractedFact(
                text=body,
                source_message_ids=tuple(
                    request.labels[label] for label in sorted(labels, key=order.__getitem__)
                ),
                keywords=_clean_list(f.keywords),
                entities=_clean_list(f.entities),
                time=when,
                importance=importance,
            )
        )
    report = ParseReport(
        unknown_source_ids=tuple(unknown),
        facts_without_source=no_source,
        empty_facts=empty,
        duplicate_facts=duplicates,
        importance_clamped=clamped,
        invalid_times=tuple(invalid_times),
    )
    return Extraction(facts=tuple(facts), summary=" ".join(raw.summary.split()), report=report)


async def extract_memories(
    llm: ResilientLLM,
    messages: Sequence[SourceMessage],
    *,
    limits: ExtractionLimits | None = None,
    max_tokens: int = 1536,
    temperature: float = 0.0,
    system_prompt: str | None = None,
) -> LLMResult[Extraction]:
    """One LLM call (plus retries/repair) for one flushed buffer.

    Raises `LLMUnavailable` (leave the buffer pending) or `LLMOutputInvalid` (mark it failed).
    """
    request = build_extraction_request(messages, limits, system_prompt)
    return await llm.call(
        request.messages,
        request.schema,
        lambda text: parse_extraction(text, request),
        max_tokens=max_tokens,
        temperature=temperature,
    )
