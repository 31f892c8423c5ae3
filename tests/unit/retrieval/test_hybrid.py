"""Hybrid search against the machine's PostgreSQL and a Qdrant local store: each strategy, the
fusion of both, filters, the BM25 cache following the user's index_revision, the memory version
of the target, and hydration from PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serve_app.retrieval.fusion import fuse
from serve_app.retrieval.hybrid import HybridRetriever, SearchTarget
from serve_app.retrieval.rerank import TUNED_PARAMS, rerank
from serve_app.settings import Settings
from serve_app.storage.vectors import VectorFilters, VectorPoint
from tests.unit.retrieval.memory_data import T0, bow, embed, row, store_rows

NONE = VectorFilters()
TEXTS = [
    "Ann adopted a dog named Max",
    "Ann ate pizza in Paris",
    "Ann started a new job",
    "Ann plays the guitar every evening",
    "Ann read a book about a cat",
    "Ben went to a wedding in Paris",
    "Ben took his dog to the wedding",
    "Ben sold his guitar",
]


@pytest.fixture
async def memories(repo, vectors):
    """User u, sessions s0 (Ann, hours 0-4) and s1 (Ben, hours 5-7)."""
    rows = [
        row("u", f"s{int(i >= 5)}", i, t, speaker=t.split()[0], hours=i)
        for i, t in enumerate(TEXTS)
    ]
    await store_rows(repo, rows, vectors)
    return {r.text: r.id for r in rows}


def retriever(repo, vectors, **settings) -> HybridRetriever:
    return HybridRetriever(repo, SearchTarget(vectors, embed, 1), Settings(**settings))


async def test_an_unknown_user_gets_none_and_a_user_without_memories_nothing(repo, vectors):
    r = retriever(repo, vectors)
    assert await r.search("nobody", "dog", 5, NONE, "hybrid") is None
    await repo.add_messages("empty", "s", [], None)
    for strategy in ("hybrid", "embedding", "bm25"):
        assert await r.search("empty", "dog", 5, NONE, strategy) == []


async def test_each_strategy_ranks_the_matching_memory_first(repo, vectors, memories):
    r = retriever(repo, vectors, rerank=False)
    for strategy in ("hybrid", "embedding", "bm25"):
        results = await r.search("u", "guitar", 2, NONE, strategy)
        assert {x["text"] for x in results} == {
            "Ann plays the guitar every evening",
            "Ben sold his guitar",
        }, strategy
        assert all(x["user_id"] == "u" and "score" in x for x in results)


async def test_hybrid_is_the_configured_fusion_of_vectors_and_bm25(repo, vectors, memories):
    settings = {"fusion_method": "rrf", "retrieval_candidates": 8, "rerank": False}
    r = retriever(repo, vectors, **settings)
    results = await r.search("u", "dog wedding Paris", 5, NONE, "hybrid")
    vec = await vectors.search("u", bow("dog wedding Paris"), 8)
    idx = await r.user_index("u", 0, 1)
    lex = idx.bm25.search("dog wedding Paris", 8, None)
    expected = fuse([vec, lex], method="rrf", weights=(0.7, 1.0), k=60.0)[:5]
    assert [x["id"] for x in results] == [i for i, _ in expected]
    assert [x["score"] for x in results] == pytest.approx([s for _, s in expected])
    assert {x["text"] for x in results[:2]} == {
        "Ben went to a wedding in Paris",
        "Ben took his dog to the wedding",
    }


async def test_hybrid_reranks_the_fusion_of_the_question_without_speaker_names(
    repo, vectors, memories
):
    r = retriever(repo, vectors, retrieval_candidates=8)
    results = await r.search("u", "What does Ben do with his guitar?", 8, NONE, "hybrid")
    idx = await r.user_index("u", 0, 1)
    assert idx.docs.speaker_names == ("ann", "ben")
    # Both retrievers search the question without "Ben"; the rerank uses the whole question.
    text = "What does do with his guitar?"
    vec = await vectors.search("u", bow(text), 8)
    lex = idx.bm25.search(text, 8, None)
    fused = fuse([vec, lex], method="score", weights=(0.7, 1.0), k=60.0)
    expected = rerank("What does Ben do with his guitar?", fused, idx.docs, TUNED_PARAMS)
    assert [x["id"] for x in results] == [i for i, _ in expected]
    assert [x["score"] for x in results] == pytest.approx([s for _, s in expected])
    # Ben's guitar beats Ann's, which plain fusion ranks the same or higher.
    assert results[0]["text"] == "Ben sold his guitar"
    assert {x["speaker"] for x in results[:3]} == {"Ben"}


async def test_explain_gives_each_rankings_score_of_every_result(repo, vectors, memories):
    r = retriever(repo, vectors, retrieval_candidates=8)
    question = "What does Ben do with his guitar?"
    results = await r.search("u", question, 8, NONE, "hybrid", explain=True)
    text = "What does do with his guitar?"
    vec = dict(await vectors.search("u", bow(text), 8))
    idx = await r.user_index("u", 0, 1)
    lex = idx.bm25.search(text, 8, None)
    fused = dict(fuse([list(vec.items()), lex], method="score", weights=(0.7, 1.0), k=60.0))
    for x in results:
        assert x["scores"] == pytest.approx(
            {"vector": vec.get(x["id"]), "bm25": dict(lex).get(x["id"]), "fused": fused[x["id"]]}
        )
    assert any(x["scores"]["bm25"] is None for x in results)  # a vector-only hit
    assert "scores" not in (await r.search("u", question, 8, NONE, "hybrid"))[0]
    [hit] = await r.search("u", "guitar", 1, NONE, "bm25", explain=True)
    assert hit["scores"]["vector"] is None and hit["scores"]["fused"] is None
    assert hit["scores"]["bm25"] == pytest.approx(hit["score"])


async def test_filters_restrict_every_strategy(repo, vectors, memories):
    r = retriever(repo, vectors)
    cases = {
        VectorFilters(session_id="s1"): {t for t in TEXTS[5:]},
        VectorFilters(speaker="ben"): {t for t in TEXTS[5:]},
        VectorFilters(time_from=T0 + timedelta(hours=1), time_to=T0 + timedelta(hours=3)): set(
            TEXTS[1:4]
        ),
    }
    for f, allowed in cases.items():
        for strategy in ("embedding", "bm25", "hybrid"):
            texts = {
                x["text"] for x in await r.search("u", "guitar Paris dog job", 10, f, strategy)
            }
            assert texts and texts <= allowed, (f, strategy)
        assert {x["text"] for x in await r.search("u", "a", 10, f, "embedding")} == allowed


async def test_the_bm25_cache_follows_the_index_revision(repo, vectors, memories):
    r = retriever(repo, vectors)
    assert await r.search("u", "violin", 5, NONE, "bm25") == []
    new = row("u", "s0", 99, "Ann bought a violin")
    async with repo.pool.acquire() as conn:
        await repo.insert_entries(conn, [new])
    # Same revision: the cached index is served as it was.
    assert await r.search("u", "violin", 5, NONE, "bm25") == []
    async with repo.pool.acquire() as conn:
        await repo.bump_index_revision(conn, ["u"])
    [hit] = await r.search("u", "violin", 5, NONE, "bm25")
    assert hit["id"] == new.id
    assert r.cached_users == 1
    r.forget("u")
    assert r.cached_users == 0


class CountingPool:
    """The repository's pool, counting the statements a search sends."""

    def __init__(self, pool) -> None:
        self.pool, self.statements = pool, 0

    def __getattr__(self, name):
        attr = getattr(self.pool, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute"):
            self.statements += 1
        return attr


async def test_a_search_on_a_current_cache_is_one_round_trip(repo, vectors, memories):
    r = retriever(repo, vectors)
    assert await r.search("u", "guitar", 2, NONE, "hybrid")  # builds the user's cache
    counting = CountingPool(repo.pool)
    r.repo = type(repo)(counting)
    for strategy in ("hybrid", "embedding", "bm25"):
        assert await r.search("u", "guitar", 2, NONE, strategy)
    assert counting.statements == 3
    # The revision moved since the cache was built: the hydrating read sees it, the index is
    # rebuilt and the same search answers from it.
    new = row("u", "s0", 99, "Ann bought a violin")
    await store_rows(repo, [new], vectors)
    async with repo.pool.acquire() as conn:
        await repo.bump_index_revision(conn, ["u"])
    [hit] = await r.search("u", "violin", 1, NONE, "bm25")
    assert hit["id"] == new.id
    # Erased meanwhile (by another replica: this one's cache still holds the user).
    async with repo.pool.acquire() as conn:
        assert await repo.delete_user(conn, "u")
    assert r.cached_users == 1
    assert await r.search("u", "guitar", 2, NONE, "hybrid") is None


async def test_the_cache_keeps_the_most_recent_users(repo, vectors, memories):
    await store_rows(repo, [row("w", "s", 1, "Wes has a cat")], vectors)
    r = retriever(repo, vectors, bm25_cache_users=1)
    assert len(await r.search("u", "dog", 3, NONE, "bm25")) == 2
    assert [x["text"] for x in await r.search("w", "cat", 3, NONE, "bm25")] == ["Wes has a cat"]
    assert r.cached_users == 1
    assert len(await r.search("u", "dog", 3, NONE, "bm25")) == 2  # rebuilt after eviction


async def test_ids_the_database_does_not_hold_are_never_returned(repo, vectors, memories):
    # A vector written without its entry (a crash between the two writes).
    ghost = "00000000-0000-0000-0000-0000000000aa"
    await vectors.upsert([VectorPoint(ghost, bow("violin violin"), "u", "s0", T0, "Ann")])
    r = retriever(repo, vectors)
    results = await r.search("u", "violin", 3, NONE, "embedding")
    assert ghost not in {x["id"] for x in results}
    assert len(results) == 3


async def test_the_target_decides_store_and_memory_version(repo, vectors, memories, tmp_path):
    r = retriever(repo, vectors)
    assert len(await r.search("u", "dog", 10, NONE, "bm25")) == 2
    v2 = [row("u", "s0", 50, "Ann walks her dog in Paris", version=2)]
    store2 = vectors.with_base("t2", vectors.dim)
    await store_rows(repo, v2, store2)
    r.retarget(SearchTarget(store2, embed, 2))
    for strategy in ("hybrid", "embedding", "bm25"):
        results = await r.search("u", "dog", 10, NONE, strategy)
        assert [x["text"] for x in results] == ["Ann walks her dog in Paris"], strategy
        assert results[0]["version"] == 2
