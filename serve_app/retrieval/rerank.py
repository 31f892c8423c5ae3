"""Second stage of hybrid search, without a model: re-scores the fused candidates with signals
that neither BM25 nor the embedding sees, using per-user arrays cached beside the BM25 index.

Signals (each weight 0 turns it off; values chosen by leave-one-conversation-out on LoCoMo dev,
benchmarks/locomo_variants.py):
- speaker: a question that names one of the user's speakers ("What books has Melanie read?")
  favours what that speaker said;
- time: a question about time ("When did ...", "How long ...") favours memories that state a
  time ("yesterday", "last week", "for 4 years"); a question naming a date favours memories
  written near that date (the date as a signal, not a filter);
- neighbours: a memory next to a strong hit in the same session shares its score, and
  unretrieved neighbours of the best hits join the candidates (an answer often spans turns);
- session: a memory in a session with strong hits gains (session-level retrieval, then turns);
- question: a memory that is itself a question ("What did you do?") rarely holds the answer
  (a quarter of LoCoMo turns, an eighth of its evidence), so it pays a penalty;
- length: a prior for longer statements;
- diversity: in the head of the list, each further memory from an already used session pays
  a penalty, so evidence spread over sessions is not crowded out by one session.
TUNED_PARAMS turns on speaker, time, date, neighbour, session and question; length,
diversity and neighbour expansion lost recall or changed nothing (the variants table).

Per query, with the user's cached UserDocs `docs`:
    text = query_without_speakers(query, docs.speaker_names)   # embed and BM25 this
    fused = hybrid(bm25(text, CANDIDATE_DEPTH), vectors(embed(text), CANDIDATE_DEPTH))
    ranked = rerank(query, fused, docs, TUNED_PARAMS)          # the original query

Cost: O(candidates) numpy and dict work, independent of the number of memories: 0.4 ms p50,
0.7 ms p95 CPU for 200 candidates at 10,000 memories (benchmarks/locomo_variants.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from serve_app.retrieval import temporal

_NAME_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class DocRow:
    """What the reranker needs of one memory entry."""

    id: str
    session_id: str
    ts: datetime
    speaker: str | None
    text: str  # the memory text; a leading "[date label] " and "speaker: " are ignored

    def own_words(self) -> str:
        """The statement itself: the date label the entry builder prefixes would make every
        memory look like it states a time."""
        text = self.text
        if text.startswith("[") and "] " in text:
            text = text.split("] ", 1)[1]
        if self.speaker and text.startswith(f"{self.speaker}: "):
            text = text[len(self.speaker) + 2 :]
        return text


@dataclass
class UserDocs:
    """Per-user arrays aligned by position, built once per index version (beside BM25).

    Memory: about 40 bytes of arrays per entry plus the id map and the feature cache (which
    holds the texts already held by the BM25 token cache's keys; 10,000 entries: a few MB).
    Build: `mentions_time` over every text, 6-20 us per entry; a rebuild with `previous`
    reads only new or changed texts (10,000 entries + 20 new: about 16 ms).
    """

    ids: list[str]
    pos: dict[str, int]
    speaker_names: tuple[str, ...]  # distinct speakers, lower-cased; index = speaker code
    speaker: np.ndarray  # int32 speaker code, -1 when none
    session: np.ndarray  # int32 session code
    prev: np.ndarray  # int32 position of the previous entry of the session, -1 when none
    next: np.ndarray  # int32 position of the next entry of the session, -1 when none
    ts: np.ndarray  # float64 epoch seconds
    timeref: np.ndarray  # bool: the text states a time
    words: np.ndarray  # int32 number of words of the statement
    question: np.ndarray  # bool: the statement ends with a question mark
    # (id, text) -> (timeref, words, question), reused by the next build
    _features: dict[tuple[str, str], tuple[bool, int, bool]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def build(cls, rows: Sequence[DocRow], previous: UserDocs | None = None) -> UserDocs:
        """`rows` in conversation order within each session (as stored: by session, then by
        message order), so that adjacent rows of one session are adjacent turns. With the
        `previous` arrays of the same user, the text features of unchanged rows are reused
        (a rebuild after an ingest batch reads only the new texts)."""
        n = len(rows)
        cache = previous._features if previous is not None else {}
        features = {}
        for r in rows:
            key = (r.id, r.text)
            features[key] = cache.get(key) or _text_features(r)
        names: dict[str, int] = {}
        sessions: dict[str, int] = {}
        speaker = np.full(n, -1, dtype=np.int32)
        session = np.empty(n, dtype=np.int32)
        prev = np.full(n, -1, dtype=np.int32)
        nxt = np.full(n, -1, dtype=np.int32)
        last: dict[int, int] = {}
        for i, r in enumerate(rows):
            if r.speaker:
                speaker[i] = names.setdefault(r.speaker.lower(), len(names))
            s = session[i] = sessions.setdefault(r.session_id, len(sessions))
            j = last.get(s)
            if j is not None:
                prev[i], nxt[j] = j, i
            last[s] = i
        return cls(
            ids=[r.id for r in rows],
            pos={r.id: i for i, r in enumerate(rows)},
            speaker_names=tuple(names),
            speaker=speaker,
            session=session,
            prev=prev,
            next=nxt,
            ts=np.fromiter((r.ts.timestamp() for r in rows), dtype=np.float64, count=n),
            timeref=np.fromiter((features[r.id, r.text][0] for r in rows), bool, count=n),
            words=np.fromiter((features[r.id, r.text][1] for r in rows), np.int32, count=n),
            question=np.fromiter((features[r.id, r.text][2] for r in rows), bool, count=n),
            _features=features,
        )

    def __len__(self) -> int:
        return len(self.ids)


def _text_features(row: DocRow) -> tuple[bool, int, bool]:
    # Captions describe a shared image, not what the speaker states.
    own = row.own_words().split(" [shares image:", 1)[0]
    return temporal.mentions_time(own), len(own.split()), own.rstrip().endswith("?")


@dataclass(frozen=True)
class RerankParams:
    speaker: float = 0.0  # added when the entry's speaker is the one the query names
    time: float = 0.0  # added when the query asks about time and the entry states one
    date: float = 0.0  # times closeness of the entry's date to a date the query names
    date_scale_days: float = 14.0  # closeness = exp(-days outside the span / scale)
    neighbour: float = 0.0  # times the best adjacent entry's normalised score
    expand_top: int = 0  # neighbours of this many best candidates join the candidates
    session: float = 0.0  # times the best normalised score in the entry's session
    diversity: float = 0.0  # penalty per entry already taken from the same session
    length: float = 0.0  # times min(1, log(1 + words) / log(1 + LENGTH_FULL_WORDS))
    question: float = 0.0  # subtracted when the statement is itself a question
    diversity_head: int = 20  # how many results the diversity step orders

    def is_identity(self) -> bool:
        return not (
            self.speaker
            or self.time
            or self.date
            or self.neighbour
            or self.expand_top
            or self.session
            or self.diversity
            or self.length
            or self.question
        )


# A statement this long gets the whole length prior; shorter ones a log share of it.
LENGTH_FULL_WORDS = 50
# Chosen by leave-one-conversation-out on LoCoMo dev (benchmarks/locomo_variants.py): with the
# query searched without its speaker names and CANDIDATE_DEPTH candidates from each retriever,
# fused (1.0, 0.7) min-max as the service does, recall@10 0.744 -> 0.828.
TUNED_PARAMS = RerankParams(
    speaker=1.0, time=0.3, date=0.1, neighbour=0.5, session=0.2, question=0.2
)
CANDIDATE_DEPTH = 100


def named_speakers(query: str, names: Sequence[str]) -> list[int]:
    """Codes of the speakers whose name (every word of it) appears in the query."""
    words = set(_NAME_WORD.findall(query.lower()))
    return [i for i, n in enumerate(names) if n and set(_NAME_WORD.findall(n)) <= words]


def query_without_speakers(query: str, names: Sequence[str]) -> str:
    """The query to embed and to match with BM25: the user's speaker names (and their "'s")
    taken out. A named speaker is the rerank's speaker signal; left in the text, the name
    pulls the embedding towards every memory that mentions the person and, in BM25, matches
    every memory the person wrote, crowding out the words that say what is asked."""
    out = query
    for name in names:
        if name:
            out = re.sub(rf"\b{re.escape(name)}(?:'s|’s)?\b", " ", out, flags=re.IGNORECASE)
    out = " ".join(out.split())
    return out if _NAME_WORD.search(out.lower()) else query


def rerank(
    query: str,
    candidates: Sequence[tuple[str, float]],
    docs: UserDocs,
    params: RerankParams,
) -> list[tuple[str, float]]:
    """Re-scored candidates, best first. Ids unknown to `docs` keep their fused score and
    are ranked among the others (an index a moment behind the database must not lose hits)."""
    if not candidates or params.is_identity():
        return list(candidates)
    where = docs.pos
    pos = np.fromiter((where.get(i, -1) for i, _ in candidates), np.int64, len(candidates))
    raw = np.fromiter((s for _, s in candidates), np.float64, len(candidates))
    lo, hi = float(raw.min()), float(raw.max())
    base = np.ones_like(raw) if hi <= lo else (raw - lo) / (hi - lo)
    extra_ids: list[str] = []
    if params.expand_top > 0:
        pos, base, extra_ids = _expand(pos, base, docs, params.expand_top)
    score = base.copy()
    ok = pos >= 0
    p = pos[ok]
    if params.neighbour:
        score[ok] += params.neighbour * _neighbour_best(p, base[ok], docs)
    if params.session:
        score[ok] += params.session * _session_best(p, base[ok], docs)
    if params.speaker:
        named = named_speakers(query, docs.speaker_names)
        if 0 < len(named) < len(docs.speaker_names):
            score[ok] += params.speaker * np.isin(docs.speaker[p], named)
    if params.time and temporal.asks_time(query):
        score[ok] += params.time * docs.timeref[p]
    if params.date:
        span = temporal.query_date(query)
        if span is not None:
            lo_ts, hi_ts = span.start.timestamp(), span.end.timestamp()
            ts = docs.ts[p]
            outside = np.maximum(lo_ts - ts, 0) + np.maximum(ts - hi_ts, 0)
            score[ok] += params.date * np.exp(-outside / (86400 * params.date_scale_days))
    if params.length:
        full = math.log1p(LENGTH_FULL_WORDS)
        score[ok] += params.length * np.minimum(1.0, np.log1p(docs.words[p]) / full)
    if params.question:
        score[ok] -= params.question * docs.question[p]
    ids = [i for i, _ in candidates] + extra_ids
    order = np.lexsort((np.arange(len(score)), -score))
    if params.diversity:
        order = _diversify(order, score, pos, docs, params.diversity, params.diversity_head)
    return list(zip([ids[i] for i in order.tolist()], score[order].tolist(), strict=True))


def _expand(
    pos: np.ndarray, base: np.ndarray, docs: UserDocs, top: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Adds the unretrieved neighbours of the `top` best candidates with score 0: they rank by
    what the neighbour and session signals give them."""
    have = set(pos.tolist())
    new: list[int] = []
    for i in np.argsort(-base, kind="stable")[:top]:
        if pos[i] < 0:
            continue
        for q in (int(docs.prev[pos[i]]), int(docs.next[pos[i]])):
            if q >= 0 and q not in have:
                have.add(q)
                new.append(q)
    if not new:
        return pos, base, []
    extra = np.asarray(new, dtype=np.int64)
    return (
        np.concatenate([pos, extra]),
        np.concatenate([base, np.zeros(len(extra))]),
        [docs.ids[q] for q in new],
    )


def _neighbour_best(p: np.ndarray, s: np.ndarray, docs: UserDocs) -> np.ndarray:
    by_pos = dict(zip(p.tolist(), s.tolist(), strict=True))
    get = by_pos.get
    return np.fromiter(
        (
            max(get(a, 0.0), get(b, 0.0))
            for a, b in zip(docs.prev[p].tolist(), docs.next[p].tolist(), strict=True)
        ),
        np.float64,
        len(p),
    )


def _session_best(p: np.ndarray, s: np.ndarray, docs: UserDocs) -> np.ndarray:
    sess = docs.session[p]
    codes, inverse = np.unique(sess, return_inverse=True)
    best = np.zeros(len(codes))
    np.maximum.at(best, inverse, s)
    return best[inverse]


def _diversify(
    order: np.ndarray,
    score: np.ndarray,
    pos: np.ndarray,
    docs: UserDocs,
    penalty: float,
    head: int,
) -> np.ndarray:
    """Greedy: the next result is the best score minus `penalty` per result already taken from
    its session. Only the first `head` places are reordered; the rest keep score order."""
    sess = np.where(pos >= 0, docs.session[np.maximum(pos, 0)], -1 - np.arange(len(pos)))
    remaining = list(order[: max(head * 3, head)])
    taken: dict[int, int] = {}
    out: list[int] = []
    while remaining and len(out) < head:
        best_k, best_v = 0, -math.inf
        for k, i in enumerate(remaining):
            v = score[i] - penalty * taken.get(int(sess[i]), 0)
            if v > best_v:
                best_k, best_v = k, v
        i = remaining.pop(best_k)
        out.append(int(i))
        taken[int(sess[i])] = taken.get(int(sess[i]), 0) + 1
    chosen = set(out)
    return np.asarray(out + [int(i) for i in order if int(i) not in chosen], dtype=np.int64)
