import pytest

from serve_app.retrieval.fusion import fuse, hybrid, rrf, score_fusion

BM25 = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
DENSE = [("c", 0.9), ("d", 0.8), ("a", 0.1)]


def test_rrf_sums_reciprocal_ranks():
    fused = dict(rrf([BM25, DENSE], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 62)


def test_rrf_order_and_deterministic_ties():
    # a and c tie, b and d tie: the id seen first (from the first ranking) comes first.
    assert [d for d, _ in rrf([BM25, DENSE])] == ["a", "c", "b", "d"]


def test_weighted_rrf_prefers_the_heavier_ranking():
    assert [d for d, _ in rrf([BM25, DENSE], weights=[1.0, 0.5])][:2] == ["a", "c"]
    assert [d for d, _ in rrf([BM25, DENSE], weights=[0.5, 1.0])][:2] == ["c", "a"]


def test_score_fusion_minmax():
    fused = dict(score_fusion([BM25, DENSE], normalise="minmax"))
    assert fused["a"] == pytest.approx(1.0 + 0.0)
    assert fused["b"] == pytest.approx(0.5)
    assert fused["c"] == pytest.approx(0.0 + 1.0)
    assert fused["d"] == pytest.approx(0.875)


def test_score_fusion_weights_and_single_item_lists():
    fused = score_fusion([[("x", 3.0)], [("y", 0.2)]], weights=[2.0, 1.0])
    assert fused == [("x", 2.0), ("y", 1.0)]


def test_zscore_stays_in_unit_range():
    fused = score_fusion([BM25], normalise="zscore")
    assert all(0.0 <= s <= 1.0 for _, s in fused)
    assert [d for d, _ in fused] == ["a", "b", "c"]


def test_empty_rankings():
    assert rrf([[], []]) == []
    assert score_fusion([[], DENSE])[0][0] == "c"


def test_fuse_dispatch_and_errors():
    assert fuse([BM25, DENSE], method="rrf") == rrf([BM25, DENSE])
    assert fuse([BM25, DENSE], method="score") == score_fusion([BM25, DENSE])
    with pytest.raises(ValueError):
        fuse([BM25], method="borda")
    with pytest.raises(ValueError):
        rrf([BM25, DENSE], weights=[1.0])
    with pytest.raises(ValueError):
        score_fusion([BM25], normalise="softmax")


def test_hybrid_uses_the_measured_settings():
    fused = hybrid(BM25, DENSE)
    assert fused == score_fusion([BM25, DENSE], weights=[1.0, 0.7], normalise="minmax")
    assert fused[0][0] == "a"  # BM25 outweighs MiniLM on a tie of normalised scores
