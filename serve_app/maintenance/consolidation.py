"""Sleep-time consolidation: who is compared with whom, what is decided, what it changes.

A group is one entry (the anchor, the newer memory) with its most similar older entries. A
decider answers per candidate: `update` (merge it and the anchor into one standalone fact),
`delete` (it directly contradicts the anchor; the newer one wins) or `keep`. Without an LLM
only exact and near-exact duplicates are merged. Decisions are applied later, in chronological
order, and only if the texts they were taken on are unchanged (else the group is `stale` and the
next run sees it again).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from difflib import SequenceMatcher
from typing import Literal, Protocol

# serve_app.llm is imported where an LLM reply is parsed: its package pulls in the openai
# client, a second of start-up for every Ray Data worker of an LLM-free job.
ChatMessage = dict[str, str]
Action = Literal["update", "delete", "keep"]
ACTIONS: tuple[str, ...] = ("update", "delete", "keep")


@dataclass(frozen=True)
class Entry:
    id: str
    text: str
    ts: datetime
    session_id: str
    source_message_ids: tuple[str, ...]

    def order_key(self) -> tuple:
        # Content-derived tie-breaks after the timestamp (entries of one session often share
        # it), so two identical histories are processed in the same order.
        return (self.ts, self.session_id, self.source_message_ids, self.id)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def older_candidates(
    anchor: Entry,
    neighbours: Sequence[tuple[Entry, float]],
    *,
    top_k: int,
    min_score: float,
) -> list[tuple[Entry, float]]:
    """The anchor's update queue: up to `top_k` older entries scoring at least `min_score`."""
    key = anchor.order_key()
    out = [
        (e, s)
        for e, s in neighbours
        if e.id != anchor.id and s >= min_score and e.order_key() < key
    ]
    out.sort(key=lambda es: (-es[1], es[0].order_key()))
    return out[:top_k]


# "[20 May 2023, Saturday] " and similar leading labels are entry decoration, not content.
_LEADING_LABEL = re.compile(r"^\s*\[[^\]]{0,80}\]\s*")
_NON_WORD = re.compile(r"[^\w]+")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", _LEADING_LABEL.sub("", text)).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def duplicate_ratio(a: str, b: str) -> float:
    """1.0 for texts equal up to case, punctuation, spacing and date label; else difflib's ratio."""
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return 1.0
    return SequenceMatcher(None, na, nb, autojunk=False).ratio()


@dataclass(frozen=True)
class CandidateDecision:
    candidate_id: str
    action: Action
    reason: str


@dataclass(frozen=True)
class GroupDecision:
    anchor_id: str
    decisions: tuple[CandidateDecision, ...]
    merged_text: str | None  # the anchor's new text when some candidate is merged
    decided_by: str
    # Texts the decision was taken on, by entry id: applying it to changed texts would be wrong.
    text_hashes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> GroupDecision:
        return cls(
            anchor_id=d["anchor_id"],
            decisions=tuple(CandidateDecision(**c) for c in d["decisions"]),
            merged_text=d.get("merged_text"),
            decided_by=d["decided_by"],
            text_hashes=dict(d.get("text_hashes") or {}),
        )

    @property
    def changes_something(self) -> bool:
        return any(c.action != "keep" for c in self.decisions)


def _hashes(anchor: Entry, candidates: Sequence[Entry]) -> dict[str, str]:
    return {e.id: text_hash(e.text) for e in (anchor, *candidates)}


def dedup_decision(
    anchor: Entry, candidates: Sequence[Entry], *, min_ratio: float = 0.95
) -> GroupDecision:
    """The LLM-free rule: merge exact and near-exact duplicates into the newer entry."""
    decisions = []
    for c in candidates:
        ratio = duplicate_ratio(anchor.text, c.text)
        if ratio >= min_ratio:
            kind = "exact" if ratio == 1.0 else f"near-exact (ratio {ratio:.3f})"
            decisions.append(CandidateDecision(c.id, "update", f"{kind} duplicate"))
        else:
            why = f"not a duplicate (ratio {ratio:.2f})"
            decisions.append(CandidateDecision(c.id, "keep", why))
    merged = anchor.text if any(d.action == "update" for d in decisions) else None
    return GroupDecision(anchor.id, tuple(decisions), merged, "dedup", _hashes(anchor, candidates))


# --- the LLM's side ------------------------------------------------------------------------------

SYSTEM_PROMPT = """You maintain a person's long-term memory. You get one NEW memory and a \
numbered list of OLDER memories that look related. For each older memory decide:
- "update": it is about the same thing as the new memory and its details belong in one fact \
with it (duplicates included). All "update" memories and the new memory are replaced by \
`merged_text`: one standalone fact that keeps every detail, names instead of pronouns, \
absolute dates, and the newer value where they differ.
- "delete": it directly contradicts the new memory (the new one wins).
- "keep": anything else, including related but distinct facts. When unsure, keep.
Give a short reason for each decision. `merged_text` is null when nothing is "update"."""

DECISION_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "decisions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "candidate": {"type": "integer", "minimum": 1},
                    "action": {"type": "string", "enum": list(ACTIONS)},
                    "reason": {"type": "string"},
                },
                "required": ["candidate", "action", "reason"],
                "additionalProperties": False,
            },
        },
        "merged_text": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["decisions", "merged_text"],
    "additionalProperties": False,
}


def _line(e: Entry) -> str:
    return " ".join(e.text.split())


def decision_messages(anchor: Entry, candidates: Sequence[Entry]) -> list[ChatMessage]:
    older = "\n".join(f"{i}. {_line(c)}" for i, c in enumerate(candidates, 1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"NEW memory:\n{_line(anchor)}\n\nOLDER memories:\n{older}"},
    ]


def parse_decision(
    text: str, anchor: Entry, candidates: Sequence[Entry], decided_by: str
) -> GroupDecision:
    """The LLM's JSON as a decision; ParseError names what is wrong (shown to the model)."""
    from serve_app.llm.base import ParseError
    from serve_app.llm.jsonreply import list_field, loads_object

    obj = loads_object(text)
    items = list_field(obj, "decisions")
    by_index: dict[int, CandidateDecision] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ParseError("each decision must be an object")
        i, action = item.get("candidate"), item.get("action")
        if not isinstance(i, int) or not 1 <= i <= len(candidates):
            raise ParseError(f"candidate must be a number from 1 to {len(candidates)}, got {i!r}")
        if action not in ACTIONS:
            raise ParseError(f"action must be one of {list(ACTIONS)}, got {action!r}")
        if i in by_index:
            raise ParseError(f"candidate {i} has two decisions")
        reason = str(item.get("reason") or "").strip() or "no reason given"
        by_index[i] = CandidateDecision(candidates[i - 1].id, action, reason[:500])
    # A candidate the model skipped is kept: the safe default.
    decisions = tuple(
        by_index.get(i, CandidateDecision(c.id, "keep", "no decision given"))
        for i, c in enumerate(candidates, 1)
    )
    merged = obj.get("merged_text")
    if any(d.action == "update" for d in decisions):
        if not isinstance(merged, str) or not merged.strip():
            raise ParseError('some decision is "update" but merged_text is empty')
        merged = merged.strip()
    else:
        merged = None
    return GroupDecision(anchor.id, decisions, merged, decided_by, _hashes(anchor, candidates))


class Decider(Protocol):
    name: str

    async def decide(self, anchor: Entry, candidates: Sequence[Entry]) -> GroupDecision: ...


class DedupDecider:
    name = "dedup"

    def __init__(self, min_ratio: float = 0.95) -> None:
        self.min_ratio = min_ratio

    async def decide(self, anchor: Entry, candidates: Sequence[Entry]) -> GroupDecision:
        return dedup_decision(anchor, candidates, min_ratio=self.min_ratio)


class LLMDecider:
    """Asks the LLM (through `ResilientLLM`: retries, repair, fallback, breaker)."""

    def __init__(self, llm, max_tokens: int = 1024) -> None:  # llm: ResilientLLM
        self.llm = llm
        self.max_tokens = max_tokens
        self.name = "llm:" + ",".join(b.model for b in llm.backends)

    async def decide(self, anchor: Entry, candidates: Sequence[Entry]) -> GroupDecision:
        result = await self.llm.call(
            decision_messages(anchor, candidates),
            DECISION_SCHEMA,
            lambda text: parse_decision(text, anchor, candidates, self.name),
            max_tokens=self.max_tokens,
        )
        return result.value


# --- applying ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tombstone:
    entry_id: str
    action: Literal["merged", "contradicted"]
    reason: str


@dataclass(frozen=True)
class GroupPlan:
    anchor_id: str
    new_text: str | None  # None: the anchor's text stays
    new_source_ids: tuple[str, ...] | None
    tombstones: tuple[Tombstone, ...]
    merged_ids: tuple[str, ...]


def plan_group(
    decision: GroupDecision, current: dict[str, Entry]
) -> GroupPlan | Literal["stale", "unchanged"]:
    """What applying `decision` changes, given the entries as they are now (by id; missing ones
    were removed by an earlier group)."""
    anchor = current.get(decision.anchor_id)
    if anchor is None or text_hash(anchor.text) != decision.text_hashes.get(anchor.id):
        return "stale"
    acting = [d for d in decision.decisions if d.action != "keep" and d.candidate_id in current]
    for d in acting:
        if text_hash(current[d.candidate_id].text) != decision.text_hashes.get(d.candidate_id):
            return "stale"
    if not acting:
        return "unchanged"
    merged = [current[d.candidate_id] for d in acting if d.action == "update"]
    tombstones = tuple(
        Tombstone(d.candidate_id, "merged" if d.action == "update" else "contradicted", d.reason)
        for d in acting
    )
    new_text = new_sources = None
    if merged:
        sources: list[str] = []
        for e in sorted(merged, key=Entry.order_key) + [anchor]:
            sources.extend(s for s in e.source_message_ids if s not in sources)
        new_sources = tuple(sources)
        if decision.merged_text and decision.merged_text != anchor.text:
            new_text = decision.merged_text
    return GroupPlan(anchor.id, new_text, new_sources, tombstones, tuple(e.id for e in merged))
