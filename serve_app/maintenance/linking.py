"""Memory linking (A-MEM's Zettelkasten notes): which related memories to link, and why.

Each entry is compared with its most similar entries from the vector index. Without an LLM a
pair is linked when its similarity reaches a threshold, with the shared content words as the
reason; with one, the LLM picks the related ones and says how they relate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serve_app.maintenance.consolidation import ChatMessage, Entry, normalize
from serve_app.retrieval.tokenize import STOPWORDS


@dataclass(frozen=True)
class Link:
    src: str  # the smaller id: a pair is stored once
    dst: str
    reason: str
    score: float


def make_link(a: str, b: str, reason: str, score: float) -> Link:
    src, dst = sorted((a, b))
    return Link(src, dst, reason, round(float(score), 4))


def shared_words(a: str, b: str, limit: int = 5) -> list[str]:
    def words(t: str) -> list[str]:
        return [w for w in normalize(t).split() if len(w) > 2 and w not in STOPWORDS]

    other = set(words(b))
    out: list[str] = []
    for w in words(a):
        if w in other and w not in out:
            out.append(w)
    return out[:limit]


def similarity_links(
    anchor: Entry, neighbours: Sequence[tuple[Entry, float]], *, min_score: float, max_links: int
) -> list[Link]:
    out = []
    for e, score in sorted(neighbours, key=lambda es: -es[1]):
        if e.id == anchor.id or score < min_score:
            continue
        shared = shared_words(anchor.text, e.text)
        why = f"similar (cosine {score:.2f})" + (f"; shared: {', '.join(shared)}" if shared else "")
        out.append(make_link(anchor.id, e.id, why, score))
        if len(out) == max_links:
            break
    return out


SYSTEM_PROMPT = """You organise a person's memory notes. You get one memory and a numbered list \
of candidate memories. Link the memory to each candidate that is about the same person, \
event, plan, object or topic, and say in a few words how they relate. Do not link unrelated \
ones."""

LINK_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "candidate": {"type": "integer", "minimum": 1},
                    "reason": {"type": "string"},
                },
                "required": ["candidate", "reason"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["links"],
    "additionalProperties": False,
}


def link_messages(anchor: Entry, candidates: Sequence[Entry]) -> list[ChatMessage]:
    listed = "\n".join(f"{i}. {' '.join(c.text.split())}" for i, c in enumerate(candidates, 1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Memory:\n{' '.join(anchor.text.split())}\n\nCandidates:\n{listed}",
        },
    ]


def parse_links(text: str, anchor: Entry, candidates: Sequence[tuple[Entry, float]]) -> list[Link]:
    from serve_app.llm.base import ParseError
    from serve_app.llm.jsonreply import list_field, loads_object

    items = list_field(loads_object(text), "links")
    out: dict[str, Link] = {}
    for item in items:
        i = item.get("candidate") if isinstance(item, dict) else None
        if not isinstance(i, int) or not 1 <= i <= len(candidates):
            raise ParseError(f"candidate must be a number from 1 to {len(candidates)}, got {i!r}")
        entry, score = candidates[i - 1]
        reason = str(item.get("reason") or "").strip()[:300] or "related"
        out[entry.id] = make_link(anchor.id, entry.id, reason, score)
    return list(out.values())


class SimilarityLinker:
    name = "similarity"

    def __init__(self, min_score: float, max_links: int) -> None:
        self.min_score, self.max_links = min_score, max_links

    async def links(self, anchor: Entry, neighbours: Sequence[tuple[Entry, float]]) -> list[Link]:
        return similarity_links(
            anchor, neighbours, min_score=self.min_score, max_links=self.max_links
        )


class LLMLinker:
    def __init__(self, llm, min_score: float, max_links: int, max_tokens: int = 768) -> None:
        self.llm, self.min_score, self.max_links = llm, min_score, max_links
        self.max_tokens = max_tokens
        self.name = "llm:" + ",".join(b.model for b in llm.backends)

    async def links(self, anchor: Entry, neighbours: Sequence[tuple[Entry, float]]) -> list[Link]:
        cands = [(e, s) for e, s in neighbours if e.id != anchor.id and s >= self.min_score]
        cands = sorted(cands, key=lambda es: -es[1])[: self.max_links]
        if not cands:
            return []
        result = await self.llm.call(
            link_messages(anchor, [e for e, _ in cands]),
            LINK_SCHEMA,
            lambda text: parse_links(text, anchor, cands),
            max_tokens=self.max_tokens,
        )
        return result.value
