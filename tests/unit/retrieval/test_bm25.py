import pytest

from serve_app.retrieval.bm25 import BACKENDS, BM25Index, bm25_text

CORPUS = [
    ("d1", "Caroline went to an LGBTQ support group yesterday"),
    ("d2", "Melanie painted a sunrise over the lake last year"),
    ("d3", "Melanie took the kids camping in the mountains"),
    ("d4", "Caroline is researching adoption agencies"),
    ("d5", "The weather was rainy all week"),
    ("d6", "John plays basketball with his team on weekends"),
    ("d7", "Maria volunteers at the homeless shelter"),
    ("d8", "Painting helps Melanie relax after work"),
]


@pytest.fixture(params=BACKENDS)
def index(request) -> BM25Index:
    idx = BM25Index(request.param)
    idx.rebuild(CORPUS)
    return idx


def test_len_and_best_match_first(index: BM25Index):
    assert len(index) == len(CORPUS)
    hits = index.search("What did Melanie paint?", limit=5)
    assert [d for d, _ in hits][:2] == ["d2", "d8"] or [d for d, _ in hits][:2] == ["d8", "d2"]
    assert all(s > 0 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_only_matching_docs_and_limit(index: BM25Index):
    hits = index.search("adoption agencies", limit=10)
    assert [d for d, _ in hits] == ["d4"]
    assert len(index.search("melanie", limit=1)) == 1


def test_unknown_or_stopword_query_gives_nothing(index: BM25Index):
    assert index.search("zeppelin", limit=5) == []
    assert index.search("what is the", limit=5) == []


def test_allowed_ids_filter(index: BM25Index):
    hits = index.search("Melanie paint", limit=5, allowed_ids={"d8", "d3", "missing"})
    assert {d for d, _ in hits} <= {"d8", "d3"}
    assert hits[0][0] == "d8"
    assert index.search("Melanie", limit=5, allowed_ids=set()) == []
    assert index.search("Melanie", limit=5, allowed_ids={"d1"}) == []


def test_filtered_scores_equal_unfiltered_scores(index: BM25Index):
    full = dict(index.search("Melanie kids camping", limit=10))
    part = dict(index.search("Melanie kids camping", limit=10, allowed_ids={"d3", "d8"}))
    assert part == pytest.approx({d: full[d] for d in part})


def test_backends_rank_alike():
    queries = ["Melanie paint", "Caroline support group", "kids camping mountains", "weekend"]
    rankings = {}
    for backend in BACKENDS:
        idx = BM25Index(backend)
        idx.rebuild(CORPUS)
        rankings[backend] = [[d for d, _ in idx.search(q, limit=8)] for q in queries]
    assert rankings["rank_bm25"] == rankings["bm25s"]


def test_rebuild_reuses_cached_tokens_and_drops_removed_docs(index: BM25Index):
    calls: list[str] = []
    base = index.tokenizer

    def counting(text: str) -> list[str]:
        calls.append(text)
        return base(text)

    index.tokenizer = counting
    changed = [*CORPUS[:7], ("d8", "Melanie plays the violin"), ("d9", "A new violin")]
    index.rebuild(changed)
    assert calls == ["Melanie plays the violin", "A new violin"]
    assert len(index) == 9
    assert {d for d, _ in index.search("violin", limit=5)} == {"d8", "d9"}
    assert index.search("relax", limit=5) == []


def test_empty_index_and_empty_docs(index: BM25Index):
    index.rebuild([])
    assert len(index) == 0
    assert index.search("anything", limit=5) == []
    index.rebuild([("a", ""), ("b", "the")])
    assert len(index) == 2
    assert index.search("anything", limit=5) == []


def test_duplicate_ids_and_unknown_backend_are_refused():
    with pytest.raises(ValueError):
        BM25Index("lucene")
    with pytest.raises(ValueError):
        BM25Index().rebuild([("a", "x"), ("a", "y")])


def test_bm25_text_counts_the_memory_text_twice_when_context_is_added():
    assert bm25_text("A: hi", "A: hi") == "A: hi"
    assert bm25_text("A: hi", "A: hi\n(after B: yo)") == "A: hi\nA: hi\n(after B: yo)"


def test_with_docs_builds_a_new_index_and_leaves_the_old_one_searchable(index: BM25Index):
    calls: list[str] = []
    base = index.tokenizer
    index.tokenizer = lambda text: calls.append(text) or base(text)
    fresh = index.with_docs([*CORPUS[:3], ("d9", "violin lessons")])
    assert calls == ["violin lessons"]
    assert fresh.backend == index.backend
    assert [d for d, _ in fresh.search("violin", 5)] == ["d9"]
    assert len(index) == len(CORPUS) and index.search("violin", 5) == []
