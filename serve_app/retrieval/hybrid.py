"""Hybrid search: vectors + BM25 over the user's entries + metadata filters, fused, re-scored by
the rerank signals (serve_app/retrieval/rerank.py), then read back from PostgreSQL.

The per-user BM25 index and rerank arrays live in process memory, rebuilt when the user's
`index_revision` in PostgreSQL moves (or the memory version served changes), so several
replicas stay consistent without talking to each other.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from serve_app.retrieval.bm25 import BM25Index, bm25_text
from serve_app.retrieval.fusion import fuse
from serve_app.retrieval.rerank import (
    TUNED_PARAMS,
    DocRow,
    UserDocs,
    query_without_speakers,
    rerank,
)
from serve_app.settings import Settings
from serve_app.storage.postgres import Repository
from serve_app.storage.vector_stores import VectorStore
from serve_app.storage.vectors import VectorFilters

Embed = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]


@dataclass(frozen=True)
class SearchTarget:
    """What one search reads together: the active index generation's vector store, the
    embedding function of its model and the memory version it indexes. Replaced as a whole when
    the active generation changes, so a search never mixes a query vector of one model with
    the collections of another, nor one version's memories with another's."""

    store: VectorStore
    embed: Embed
    memory_version: int


@dataclass
class UserIndex:
    """One user's BM25 index and rerank arrays, cached in process memory."""

    revision: int  # the user's index_revision when built
    memory_version: int  # the memory version its documents belong to
    bm25: BM25Index
    docs: UserDocs
    # id -> (session_id, ts epoch seconds, speaker lower-cased), for filtering BM25 hits
    meta: dict[str, tuple[str, float, str]]

    def allowed(self, f: VectorFilters) -> set[str] | None:
        """The ids the filters let through (None: no filter)."""
        if f.is_empty():
            return None
        lo = f.time_from.timestamp() if f.time_from else float("-inf")
        hi = f.time_to.timestamp() if f.time_to else float("inf")
        speaker = f.speaker.lower() if f.speaker else None
        return {
            i
            for i, (session, ts, spk) in self.meta.items()
            if (f.session_id is None or session == f.session_id)
            and lo <= ts <= hi
            and (speaker is None or spk == speaker)
        }


@dataclass
class Ranking:
    """One search's ranked ids, and the rankings it was fused from (for `explain`)."""

    ranked: list[tuple[str, float]]
    vector: list[tuple[str, float]] = field(default_factory=list)
    lexical: list[tuple[str, float]] = field(default_factory=list)
    fused: list[tuple[str, float]] = field(default_factory=list)


class HybridRetriever:
    """Search logic over a repository, the active generation's vectors and a BM25 cache."""

    def __init__(self, repo: Repository, target: SearchTarget, settings: Settings) -> None:
        self.repo = repo
        self.target = target
        self.settings = settings
        self._cache: OrderedDict[str, UserIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def retarget(self, target: SearchTarget) -> None:
        # One assignment: searches read the whole target at once.
        self.target = target

    @property
    def cached_users(self) -> int:
        return len(self._cache)

    async def user_index(self, user_id: str, revision: int, memory_version: int) -> UserIndex:
        """The user's BM25 index at `revision` or later, over `memory_version`."""
        cached = self._cache.get(user_id)
        if cached is not None and (cached.revision, cached.memory_version) == (
            revision,
            memory_version,
        ):
            self._cache.move_to_end(user_id)
            return cached
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(user_id)
            if (
                cached is not None
                and cached.revision >= revision
                and cached.memory_version == memory_version
            ):
                return cached
            # Read the revision before the rows: a change racing this read leaves the cache
            # marked older than its content, which only costs one more rebuild.
            revision = await self.repo.index_revision(user_id) or revision
            rows = await self.repo.index_docs(user_id, memory_version)
            # Built beside the cached index (which keeps serving) and reusing its token cache,
            # so only texts that changed are tokenized again.
            old = BM25Index(self.settings.bm25_backend) if cached is None else cached.bm25
            fresh = await asyncio.to_thread(
                old.with_docs, [(r["id"], bm25_text(r["text"], r["index_text"])) for r in rows]
            )
            docs = await asyncio.to_thread(
                UserDocs.build,
                [DocRow(r["id"], r["session_id"], r["ts"], r["speaker"], r["text"]) for r in rows],
                None if cached is None else cached.docs,
            )
            entry = UserIndex(
                revision=revision,
                memory_version=memory_version,
                bm25=fresh,
                docs=docs,
                meta={
                    r["id"]: (r["session_id"], r["ts"].timestamp(), (r["speaker"] or "").lower())
                    for r in rows
                },
            )
            self._cache[user_id] = entry
            self._cache.move_to_end(user_id)
            while len(self._cache) > self.settings.bm25_cache_users:
                self._cache.popitem(last=False)
            return entry

    def forget(self, user_id: str) -> None:
        self._cache.pop(user_id, None)
        self._locks.pop(user_id, None)

    def _current(self, user_id: str, memory_version: int) -> UserIndex | None:
        """The cached index of the user over `memory_version`, whatever its revision."""
        cached = self._cache.get(user_id)
        if cached is None or cached.memory_version != memory_version:
            return None
        self._cache.move_to_end(user_id)
        return cached

    async def search(
        self,
        user_id: str,
        query: str,
        limit: int,
        filters: VectorFilters,
        strategy: str,
        explain: bool = False,
    ) -> list[dict] | None:
        """Ranked memories with scores, or None when the user is unknown. With `explain`, each
        row also has `scores`: the raw vector and BM25 scores and the fused score before the
        rerank signals (None where that ranking did not return the memory).

        One PostgreSQL round trip when the user's BM25 index is cached: the search runs on the
        cached index and the hydrating read also returns the user's index revision; if that
        moved meanwhile, the index is rebuilt and the ranking done again (the query vector and
        the vector hits, read from the live store, are kept)."""
        # Read once, before any await: a switch of generation mid-search cannot mix targets.
        target = self.target
        idx = self._current(user_id, target.memory_version)
        if idx is None:
            revision = await self.repo.index_revision(user_id)
            if revision is None:
                return None
            idx = await self.user_index(user_id, revision, target.memory_version)
        depth = max(limit, self.settings.retrieval_candidates)
        reranked = strategy == "hybrid" and self.settings.rerank
        vector_hits: dict[str, list[tuple[str, float]]] = {}

        async def by_vector(text: str) -> list[tuple[str, float]]:
            if text not in vector_hits:
                [vector] = await target.embed([text])
                vector_hits[text] = await target.store.search(user_id, vector, depth, filters)
            return vector_hits[text]

        for _ in range(2):
            ranking = await self._rank(idx, query, strategy, reranked, depth, filters, by_vector)
            head = ranking.ranked[: limit + 10]
            # Hydrate from PostgreSQL, the system of record: an id the index still holds but
            # the database no longer does (a crash between the two writes) is never returned.
            rows, revision = await self.repo.memories_and_revision(
                user_id, [i for i, _ in head], target.memory_version
            )
            if revision is None:
                return None
            if revision <= idx.revision:
                break
            idx = await self.user_index(user_id, revision, target.memory_version)
        parts = (
            (dict(ranking.vector), dict(ranking.lexical), dict(ranking.fused)) if explain else None
        )
        out = []
        for doc_id, score in head:
            row = rows.get(doc_id)
            if row is not None:
                out.append({**row, "score": score})
                if parts is not None:
                    v, b, f = (p.get(doc_id) for p in parts)
                    out[-1]["scores"] = {"vector": v, "bm25": b, "fused": f}
            if len(out) == limit:
                break
        return out

    async def _rank(
        self,
        idx: UserIndex,
        query: str,
        strategy: str,
        reranked: bool,
        depth: int,
        filters: VectorFilters,
        by_vector: Callable[[str], Awaitable[list[tuple[str, float]]]],
    ) -> Ranking:
        # A speaker's name matches every line that speaker said; the rerank's speaker signal
        # uses it instead, and both retrievers search the rest of the question.
        text = query_without_speakers(query, idx.docs.speaker_names) if reranked else query

        def by_bm25() -> list[tuple[str, float]]:
            return idx.bm25.search(text, depth, idx.allowed(filters))

        if strategy == "embedding":
            vector = await by_vector(text)
            return Ranking(vector, vector=vector)
        if strategy == "bm25":
            lexical = by_bm25()
            return Ranking(lexical, lexical=lexical)
        vector_hits = asyncio.ensure_future(by_vector(text))
        lexical = by_bm25()  # while the query is being embedded
        vector = await vector_hits
        fused = fuse(
            [vector, lexical],
            method=self.settings.fusion_method,
            weights=self.settings.fusion_weights,
            k=self.settings.fusion_rrf_k,
        )
        ranked = rerank(query, fused, idx.docs, TUNED_PARAMS) if reranked else fused
        return Ranking(ranked, vector, lexical, fused)
