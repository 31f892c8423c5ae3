from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from serve_app.retrieval.rerank import (
    TUNED_PARAMS,
    DocRow,
    RerankParams,
    UserDocs,
    named_speakers,
    query_without_speakers,
    rerank,
)

T0 = datetime(2023, 5, 1, tzinfo=UTC)


def _row(i: int, session: str, speaker: str, text: str, day: int = 0) -> DocRow:
    ts = T0 + timedelta(days=day)
    return DocRow(f"e{i}", session, ts, speaker, f"[{ts:%d %B %Y}] {speaker}: {text}")


@pytest.fixture
def docs() -> UserDocs:
    return UserDocs.build(
        [
            _row(0, "s1", "Alice", "I love painting sunsets."),
            _row(1, "s1", "Bob", "I went hiking yesterday."),
            _row(2, "s1", "Alice", "Nice! Where did you go?"),
            _row(3, "s2", "Bob", "My dog is called Max.", day=40),
            _row(4, "s2", "Alice", "I read a great book.", day=40),
            _row(5, "s3", "Alice", "Pottery class was fun.", day=80),
        ]
    )


def test_build_links_neighbours_within_a_session(docs):
    assert docs.prev.tolist() == [-1, 0, 1, -1, 3, -1]
    assert docs.next.tolist() == [1, 2, -1, 4, -1, -1]
    assert docs.session.tolist() == [0, 0, 0, 1, 1, 2]
    assert docs.speaker_names == ("alice", "bob")
    assert docs.speaker.tolist() == [0, 1, 0, 1, 0, 0]


def test_date_label_does_not_count_as_stating_a_time(docs):
    # Every text starts with "[01 May 2023] ...": only "yesterday" states a time.
    assert docs.timeref.tolist() == [False, True, False, False, False, False]


def test_own_words_strip_label_and_speaker():
    row = DocRow("x", "s", T0, "Bob", "[1 May 2023, Monday] Bob: went out [shares image: a dog]")
    assert row.own_words() == "went out [shares image: a dog]"
    assert DocRow("y", "s", T0, None, "plain text").own_words() == "plain text"


def test_identity_params_keep_the_fused_order(docs):
    cands = [("e3", 0.9), ("e0", 0.5)]
    assert rerank("anything", cands, docs, RerankParams()) == cands
    assert rerank("anything", [], docs, RerankParams(speaker=1)) == []


def test_speaker_named_in_the_query_wins(docs):
    cands = [("e3", 1.0), ("e4", 0.8), ("e1", 0.0)]
    out = rerank("What does Alice like to read?", cands, docs, RerankParams(speaker=0.5))
    assert [i for i, _ in out][0] == "e4"
    # Both speakers named: no preference.
    both = rerank("What do Alice and Bob like?", cands, docs, RerankParams(speaker=0.5))
    assert [i for i, _ in both] == ["e3", "e4", "e1"]


def test_time_question_favours_memories_stating_a_time(docs):
    cands = [("e0", 1.0), ("e1", 0.9), ("e5", 0.0)]
    params = RerankParams(time=0.3)
    assert rerank("When did Bob go hiking?", cands, docs, params)[0][0] == "e1"
    assert rerank("Where did Bob go hiking?", cands, docs, params)[0][0] == "e0"


def test_date_in_query_favours_memories_of_that_period(docs):
    cands = [("e0", 1.0), ("e5", 0.9), ("e3", 0.0)]
    out = rerank("What did Alice do in July 2023?", cands, docs, RerankParams(date=0.5))
    assert out[0][0] == "e5"  # day 80 = 20 July 2023


def test_neighbour_shares_the_score_of_a_strong_hit(docs):
    cands = [("e1", 1.0), ("e5", 0.55), ("e2", 0.5), ("e3", 0.0)]
    out = rerank("hiking", cands, docs, RerankParams(neighbour=0.3))
    assert [i for i, _ in out][:2] == ["e1", "e2"]


def test_expansion_adds_unretrieved_neighbours(docs):
    cands = [("e4", 1.0), ("e5", 0.0)]
    out = dict(rerank("book", cands, docs, RerankParams(neighbour=0.3, expand_top=1)))
    assert out["e3"] == pytest.approx(0.3)  # e4's neighbour, not a candidate before


def test_session_signal_lifts_hits_of_a_strong_session(docs):
    # Scores are min-max normalised first: e5 0.55, e2 0.5; e2's session holds the best hit.
    cands = [("e0", 1.0), ("e5", 0.55), ("e2", 0.5), ("e3", 0.0)]
    out = rerank("painting", cands, docs, RerankParams(session=0.2))
    assert [i for i, _ in out] == ["e0", "e2", "e5", "e3"]


def test_diversity_spreads_the_head_over_sessions(docs):
    cands = [("e0", 1.0), ("e1", 0.95), ("e2", 0.9), ("e4", 0.85), ("e5", 0.0)]
    out = rerank("x", cands, docs, RerankParams(diversity=0.3, diversity_head=2))
    # e4 (another session) takes second place; after the head, score order.
    assert [i for i, _ in out] == ["e0", "e4", "e1", "e2", "e5"]


def test_unknown_ids_keep_their_place(docs):
    cands = [("new", 1.0), ("e3", 0.5), ("e4", 0.4)]
    out = rerank("What did Alice read?", cands, docs, RerankParams(speaker=0.2))
    assert [i for i, _ in out] == ["new", "e4", "e3"]


def test_named_speakers_match_whole_names():
    names = ("alice", "bob smith", "al")
    assert named_speakers("What did Alice say?", names) == [0]
    assert named_speakers("Did Bob Smith and Al meet?", names) == [1, 2]
    assert named_speakers("Did Bob meet Alicia?", names) == []


def test_query_without_speakers():
    names = ("melanie", "caroline")
    assert query_without_speakers("What books has Melanie read?", names) == "What books has read?"
    assert query_without_speakers("What are Caroline's plans?", names) == "What are plans?"
    assert query_without_speakers("Melanie?", names) == "Melanie?"  # nothing else to search
    assert query_without_speakers("Melanies garden", names) == "Melanies garden"


def test_scores_are_best_first(docs):
    cands = [(f"e{i}", float(s)) for i, s in enumerate(np.linspace(1, 0, 6))]
    params = RerankParams(speaker=0.3, time=0.2, neighbour=0.3, session=0.2)
    out = rerank("When did Alice paint?", cands, docs, params)
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    assert sorted(i for i, _ in out) == sorted(i for i, _ in cands)


def test_build_counts_words_and_questions_without_captions():
    docs = UserDocs.build(
        [
            _row(0, "s", "Ann", "How are you? [shares image: a cat]"),
            _row(1, "s", "Bob", "Fine, I went out. [shares image: is it a dog?]"),
        ]
    )
    assert docs.question.tolist() == [True, False]
    assert docs.words.tolist() == [3, 4]


def test_a_memory_that_only_asks_pays_the_question_penalty():
    docs = UserDocs.build(
        [_row(0, "s", "Ann", "Where did you go hiking?"), _row(1, "s", "Bob", "To the Alps.")]
    )
    cands = [("e0", 1.0), ("e1", 0.9), ("zz", 0.0)]
    out = rerank("hiking trip", cands, docs, RerankParams(question=0.2))
    assert [i for i, _ in out][:2] == ["e1", "e0"]


def test_length_prior_favours_longer_statements():
    docs = UserDocs.build(
        [_row(0, "s", "Ann", "Yes."), _row(1, "s", "Bob", " ".join(["word"] * 60))]
    )
    out = dict(rerank("q", [("e0", 1.0), ("e1", 1.0)], docs, RerankParams(length=0.5)))
    assert out["e1"] == pytest.approx(1.5)
    assert 1.0 < out["e0"] < out["e1"]


def test_tuned_params_change_the_order():
    assert not TUNED_PARAMS.is_identity()
    assert TUNED_PARAMS.diversity == 0 and TUNED_PARAMS.expand_top == 0


def test_rebuild_reuses_features_of_unchanged_rows(docs, monkeypatch):
    import serve_app.retrieval.rerank as rr

    rows = [_row(0, "s1", "Alice", "I love painting sunsets."), _row(9, "s1", "Bob", "Yesterday!")]
    calls = []
    real = rr._text_features
    monkeypatch.setattr(rr, "_text_features", lambda r: calls.append(r.id) or real(r))
    fresh = UserDocs.build(rows, previous=docs)
    assert calls == ["e9"]  # e0's text is unchanged
    assert fresh.timeref.tolist() == [False, True]
    assert fresh.prev.tolist() == [-1, 0]
