from datetime import UTC, datetime

import pytest

from serve_app.llm.base import ParseError
from serve_app.maintenance.consolidation import Entry
from serve_app.maintenance.linking import (
    link_messages,
    make_link,
    parse_links,
    shared_words,
    similarity_links,
)

T0 = datetime(2023, 5, 1, tzinfo=UTC)


def e(i, text):
    return Entry(i, text, T0, "s", (i,))


def test_links_are_stored_once_per_pair():
    assert make_link("b", "a", "r", 0.5) == make_link("a", "b", "r", 0.5)


def test_similarity_links_threshold_limit_and_reason():
    anchor = e("a", "Training for the Berlin marathon")
    near = [(e("b", "My marathon training plan"), 0.8), (e("c", "teapot"), 0.3), (anchor, 1.0)]
    links = similarity_links(anchor, near, min_score=0.5, max_links=3)
    assert [(lk.src, lk.dst) for lk in links] == [("a", "b")]
    assert "cosine 0.80" in links[0].reason and "marathon" in links[0].reason
    assert shared_words("the cat sat", "a cat sat") == ["cat", "sat"]


def test_parse_links_and_errors():
    anchor = e("a", "x")
    cands = [(e("b", "y"), 0.7), (e("c", "z"), 0.6)]
    links = parse_links('{"links": [{"candidate": 2, "reason": "same trip"}]}', anchor, cands)
    assert [(lk.dst, lk.reason, lk.score) for lk in links] == [("c", "same trip", 0.6)]
    with pytest.raises(ParseError):
        parse_links('{"links": [{"candidate": 3, "reason": ""}]}', anchor, cands)
    assert "Candidates:\n1. y\n2. z" in link_messages(anchor, [c for c, _ in cands])[1]["content"]
