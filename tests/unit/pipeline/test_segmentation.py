from __future__ import annotations

import numpy as np
import pytest

from serve_app.pipeline.segmentation import (
    SegmentationConfig,
    coarse_boundaries,
    consecutive_similarities,
    fine_boundaries,
    segment_boundaries,
    split_segments,
)

# A scripted conversation with two known topic shifts (hiking -> sourdough -> job interview).
CONVERSATION = [
    "I went hiking in the Rocky Mountains last weekend.",
    "Nice! Which trail did you hike in the mountains?",
    "We climbed the Sky Pond trail, a steep mountain hike past two alpine lakes.",
    "Hiking to alpine lakes sounds amazing. Did you camp on the mountain?",
    "Yes, we camped near the trailhead and hiked to the summit at sunrise.",
    "Anyway, I have started baking sourdough bread at home.",
    "Sourdough bread is hard to bake! How is your starter doing?",
    "My sourdough starter bubbles nicely now; I feed it flour and water daily.",
    "Do you bake the sourdough bread in a dutch oven?",
    "Yes, I bake each sourdough loaf in a hot dutch oven for forty minutes.",
    "By the way, I have a job interview at a software company on Monday.",
    "Good luck with the interview! What role did you apply for at the company?",
    "It is a backend engineer job; the interview has a coding test and a system design round.",
    "Prepare for the coding interview questions and practice system design.",
    "Thanks, I am practising interview questions for the engineer job every evening.",
]
TOPIC_STARTS = [5, 10]


def topic_embeddings(labels: list[int], dim: int = 8, noise: float = 0.1) -> np.ndarray:
    """One direction per topic plus a little deterministic noise."""
    rng = np.random.default_rng(0)
    base = np.eye(dim)
    return np.stack([base[label] + noise * rng.standard_normal(dim) for label in labels])


def test_real_topic_shifts_found_from_embeddings_alone(minilm):
    emb = minilm.encode(CONVERSATION, normalize_embeddings=True)
    assert segment_boundaries(emb) == TOPIC_STARTS


def test_coarse_attention_keeps_only_nearby_fine_boundaries(minilm):
    emb = minilm.encode(CONVERSATION, normalize_embeddings=True)
    # local maxima at 4 and 9 (next to the real shifts) keep both fine boundaries
    attention = [0.1] * 14
    attention[4] = attention[9] = 0.9
    assert coarse_boundaries(attention) == [4, 9]
    assert segment_boundaries(emb, attention) == TOPIC_STARTS
    # a single coarse peak far from 10 drops that boundary
    attention = [0.1] * 14
    attention[2] = 0.9
    assert segment_boundaries(emb, attention) == [5]


def test_coarse_without_nearby_fine_falls_back_to_fine():
    emb = topic_embeddings([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    attention = [0.1] * 13
    attention[2] = 0.9  # a coarse boundary at 2, far from the shift at 10
    assert segment_boundaries(emb, attention, SegmentationConfig(coarse_tolerance=3)) == [10]


def test_coarse_boundaries_are_strict_local_maxima():
    assert coarse_boundaries([0.5, 0.9, 0.2, 0.4, 0.4, 0.3, 0.8, 0.1]) == [1, 6]
    assert coarse_boundaries([1.0, 0.5]) == []
    assert coarse_boundaries([]) == []


def test_fine_boundaries_on_crafted_embeddings():
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    assert fine_boundaries(topic_embeddings(labels)) == [3, 5]


def test_threshold_rises_until_a_drop_is_found():
    # consecutive similarities 0.9, 0.42, 0.9: nothing below 0.2..0.4, found at 0.45
    angle = np.arccos(0.42)
    emb = np.array(
        [[1, 0], [1, 0.0484], [np.cos(angle), np.sin(angle)], [np.cos(angle), np.sin(angle)]]
    )
    sims = consecutive_similarities(emb)
    assert sims[1] == pytest.approx(0.42, abs=0.05)
    assert fine_boundaries(emb) == [2]
    strict = SegmentationConfig(similarity_threshold=0.2, max_similarity_threshold=0.4)
    assert fine_boundaries(emb, strict) == []


def test_config_thresholds_and_validation():
    assert SegmentationConfig().thresholds() == [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    with pytest.raises(ValueError):
        SegmentationConfig(threshold_step=0)
    with pytest.raises(ValueError):
        SegmentationConfig(similarity_threshold=0.6, max_similarity_threshold=0.5)


def test_degenerate_inputs():
    assert segment_boundaries(np.zeros((0, 4))) == []
    assert segment_boundaries(np.ones((1, 4)), attention=[]) == []
    assert consecutive_similarities(np.zeros((3, 2))).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        segment_boundaries(np.ones((3, 4)), attention=[0.1])


def test_split_keeps_the_unfinished_tail():
    items = list("abcdefg")
    assert split_segments(items, [2, 5], keep_tail=True) == (
        [["a", "b"], ["c", "d", "e"]],
        ["f", "g"],
    )
    assert split_segments(items, [2, 5], keep_tail=False) == (
        [["a", "b"], ["c", "d", "e"], ["f", "g"]],
        [],
    )
    # no boundary: the whole buffer is one finished segment (otherwise it never drains)
    assert split_segments(items, [], keep_tail=True) == ([items], [])
    assert split_segments([], [], keep_tail=True) == ([], [])


@pytest.mark.parametrize("bad", [[0], [7], [3, 3], [4, 2]])
def test_split_rejects_bad_boundaries(bad):
    with pytest.raises(ValueError):
        split_segments(list("abcdefg"), bad, keep_tail=True)


def test_carried_tail_is_segmented_again_with_new_turns(minilm):
    emb = minilm.encode(CONVERSATION, normalize_embeddings=True)
    # first call sees the first 12 turns: hiking and sourdough finish, the interview is the tail
    first = segment_boundaries(emb[:12])
    done, tail = split_segments(list(range(12)), first, keep_tail=True)
    assert done == [list(range(5)), list(range(5, 10))]
    assert tail == [10, 11]
    # next call: the tail first, then the turns that arrived since; nothing lost or repeated
    rest = tail + list(range(12, 15))
    done, tail = split_segments(rest, segment_boundaries(emb[rest]), keep_tail=False)
    assert [turn for segment in done for turn in segment] == list(range(10, 15))
    assert tail == []
