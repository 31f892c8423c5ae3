import asyncio
import json
from datetime import UTC, datetime

import pytest

from serve_app.jobs.consolidation import Entry
from serve_app.jobs.deciders import consolidation_responder, link_responder, make_decider
from serve_app.jobs.linking import (
    link_messages,
    make_link,
    parse_links,
    shared_words,
    similarity_links,
)
from serve_app.jobs.progress import Progress
from serve_app.llm.base import ParseError

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


def test_progress_rate_and_eta_count_this_run_only():
    now = [100.0]
    p = Progress(total=100, done=40, clock=lambda: now[0])
    assert p.rate_per_s is None and p.eta_s is None
    now[0] += 10
    p.add(20)
    assert p.rate_per_s == 2.0 and p.eta_s == 20.0
    assert "60/100 (60.0%)" in p.line("queue")
    p.add(40)
    assert p.eta_s == 0.0


def test_scripted_rules_drive_the_engine_double(tmp_path):
    from serve_app.jobs.consolidation import decision_messages

    rules = [{"new": "teacher", "older": "nurse", "action": "delete", "reason": "job changed"}]
    msgs = decision_messages(e("n", "Now a teacher"), [e("a", "a nurse"), e("b", "likes tea")])
    reply = json.loads(consolidation_responder(rules)(msgs, {}))
    assert [d["action"] for d in reply["decisions"]] == ["delete", "keep"]

    msgs = link_messages(e("a", "marathon in Berlin"), [e("b", "running shoes"), e("c", "tea")])
    reply = json.loads(link_responder([{"a": "marathon", "b": "shoes"}])(msgs, {}))
    assert reply["links"] == [{"candidate": 1, "reason": "rule"}]

    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"consolidate": rules}))
    decider = make_decider(f"scripted:{path}", 0.95)
    d = asyncio.run(decider.decide(e("n", "Now a teacher"), [e("a", "a nurse")]))
    assert [c.action for c in d.decisions] == ["delete"]
    with pytest.raises(ValueError):
        make_decider("magic", 0.95)
