from datetime import UTC, datetime

import numpy as np

from benchmarks.locomo_data import LocomoConversation, LocomoQuestion, LocomoSession, LocomoTurn
from benchmarks.locomo_variants import (
    BASE,
    CHOSEN,
    Runner,
    is_kept,
    leave_one_out,
    micro_benchmark,
    prepare,
    r10,
    variants,
)


class HashEmbedder:
    """Bag-of-words vectors: enough for a deterministic dense ranking without a model."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, hash(w.strip("?.,!")) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _conv(cid: str) -> LocomoConversation:
    def turn(n, spk, text):
        return LocomoTurn(f"D{n}", spk, text)

    s1 = LocomoSession(
        "session_1",
        datetime(2023, 5, 8, tzinfo=UTC),
        (
            turn("1:1", "Ann", "I went hiking in the mountains yesterday."),
            turn("1:2", "Bob", "Nice, I adopted a dog called Max."),
            turn("1:3", "Ann", "Max is a great name for a dog."),
        ),
    )
    s2 = LocomoSession(
        "session_2",
        datetime(2023, 6, 2, tzinfo=UTC),
        (
            turn("2:1", "Bob", "I read a book about mountains."),
            turn("2:2", "Ann", "I started a pottery class last week."),
        ),
    )
    qs = [
        LocomoQuestion("When did Ann go hiking?", "7 May 2023", ("D1:1",), 2),
        LocomoQuestion("What pet does Bob have?", "a dog", ("D1:2",), 4),
        LocomoQuestion("What hobbies does Ann have?", "hiking, pottery", ("D1:1", "D2:2"), 1),
    ]
    return LocomoConversation(cid, ("Ann", "Bob"), [s1, s2], qs)


def test_variants_and_leave_one_out_run_on_tiny_conversations():
    runner = Runner([prepare(_conv(f"c{i}"), HashEmbedder()) for i in range(2)])
    names = [n for n, _ in variants()]
    assert len(names) == len(set(names))
    assert r10(runner.rows(BASE)) > 0
    # With five messages recall@10 is complete whatever the order.
    assert r10(runner.rows(CHOSEN)) == 1.0
    grid = [BASE, CHOSEN]
    loo = leave_one_out(runner, grid)
    assert [f["held_out"] for f in loo["folds"]] == ["c0", "c1"]
    assert loo["held_out_pooled"]["questions"] == 6


def test_prepared_question_searches_without_speaker_names():
    p = prepare(_conv("c"), HashEmbedder())
    assert p.docs.speaker_names == ("ann", "bob")
    assert len(p.questions[0].bm25_stripped) > 0


def test_kept_marks_the_methods_of_the_chosen_configuration():
    assert is_kept("speaker_0.5") and is_kept("stack_+time") and is_kept("strip_speakers")
    assert not is_kept("diversity_0.1") and not is_kept("neighbour_0.2_expand5")
    assert not is_kept("chosen_+dense_prf_k3_b0.5") and not is_kept("normalise_zscore")


def test_micro_benchmark_reports_costs():
    cost = micro_benchmark(n=300, candidates=50, queries=5)
    assert cost["memories"] == 300
    assert 0 < cost["added_cpu_ms_p50"] <= cost["added_cpu_ms_max"]
