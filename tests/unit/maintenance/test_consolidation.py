import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.llm.base import ParseError
from serve_app.llm.resilience import ResilientLLM, RetryPolicy
from serve_app.llm.scripted import ScriptedBackend
from serve_app.maintenance.consolidation import (
    DECISION_SCHEMA,
    DedupDecider,
    Entry,
    GroupDecision,
    LLMDecider,
    decision_messages,
    dedup_decision,
    duplicate_ratio,
    normalize,
    older_candidates,
    parse_decision,
    plan_group,
)

T0 = datetime(2023, 5, 1, tzinfo=UTC)


def entry(i: str, text: str, day: int = 0, session: str = "s1", sources=None) -> Entry:
    return Entry(i, text, T0 + timedelta(days=day), session, tuple(sources or [f"m{i}"]))


def test_normalize_drops_date_label_case_and_punctuation():
    assert normalize("[20 May 2023, Saturday] Alice: I LOVE  tea!") == "alice i love tea"
    assert duplicate_ratio("[1 May 2023, Monday] Bo: hi there", "[9 June 2023] bo: Hi there.") == 1
    assert duplicate_ratio("I clean the garage on Monday", "I clean the garage on Friday") < 0.95


def test_older_candidates_keep_only_older_above_threshold_best_first():
    anchor = entry("c", "x", day=5)
    near = [
        (entry("a", "x", day=1), 0.9),
        (entry("b", "x", day=3), 0.95),
        (entry("d", "x", day=9), 0.99),  # newer: not a candidate
        (entry("e", "x", day=2), 0.5),  # below threshold
        (anchor, 1.0),
    ]
    got = older_candidates(anchor, near, top_k=5, min_score=0.8)
    assert [(e.id, s) for e, s in got] == [("b", 0.95), ("a", 0.9)]
    assert len(older_candidates(anchor, near, top_k=1, min_score=0.8)) == 1


def test_same_timestamp_orders_by_content_not_arrival():
    a = entry("zz", "x", day=1, sources=["D1:1"])
    b = entry("aa", "x", day=1, sources=["D1:2"])
    assert a.order_key() < b.order_key()
    assert [e.id for e, _ in older_candidates(b, [(a, 0.9)], top_k=3, min_score=0)] == ["zz"]
    assert older_candidates(a, [(b, 0.9)], top_k=3, min_score=0) == []


def test_dedup_merges_exact_and_near_exact_only():
    anchor = entry("n", "[9 May 2023] Alice: I adopted a dog named Max.", day=9)
    same = entry("o1", "[1 May 2023] Alice: I adopted a dog named Max", day=1)
    other = entry("o2", "[1 May 2023] Alice: I adopted a cat named Max.", day=1)
    d = dedup_decision(anchor, [same, other])
    assert [(c.candidate_id, c.action) for c in d.decisions] == [("o1", "update"), ("o2", "keep")]
    assert d.merged_text == anchor.text and d.decided_by == "dedup"
    assert dedup_decision(anchor, [other]).merged_text is None


def test_parse_decision_accepts_valid_and_keeps_unmentioned():
    anchor = entry("n", "new", day=9)
    cands = [entry("a", "one"), entry("b", "two"), entry("c", "three")]
    text = json.dumps(
        {
            "decisions": [
                {"candidate": 1, "action": "update", "reason": "same"},
                {"candidate": 2, "action": "delete", "reason": "contradiction"},
            ],
            "merged_text": "merged fact",
        }
    )
    d = parse_decision(text, anchor, cands, "llm:x")
    assert [(c.candidate_id, c.action) for c in d.decisions] == [
        ("a", "update"),
        ("b", "delete"),
        ("c", "keep"),
    ]
    assert d.merged_text == "merged fact"
    assert GroupDecision.from_json(json.loads(json.dumps(d.to_json()))) == d


@pytest.mark.parametrize(
    "reply, problem",
    [
        ('{"decisions": [{"candidate": 4, "action": "keep", "reason": ""}], "merged_text": null}',
         "from 1 to 3"),
        ('{"decisions": [{"candidate": 1, "action": "merge", "reason": ""}], "merged_text": null}',
         "action must be"),
        ('{"decisions": [{"candidate": 1, "action": "update", "reason": ""}], "merged_text": ""}',
         "merged_text"),
        ('{"decisions": [{"candidate": 1, "action": "keep", "reason": ""},'
         ' {"candidate": 1, "action": "keep", "reason": ""}], "merged_text": null}', "two"),
        ("no json here", "no JSON"),
    ],
)  # fmt: skip
def test_parse_decision_rejects_with_a_reason_the_model_can_use(reply, problem):
    cands = [entry("a", "1"), entry("b", "2"), entry("c", "3")]
    with pytest.raises(ParseError, match=problem):
        parse_decision(reply, entry("n", "n", 9), cands, "llm")


def test_prompt_lists_candidates_and_schema_requires_fields():
    msgs = decision_messages(entry("n", "new fact", 9), [entry("a", "old\nfact")])
    assert msgs[0]["role"] == "system" and "NEW memory:\nnew fact" in msgs[1]["content"]
    assert "1. old fact" in msgs[1]["content"]
    assert set(DECISION_SCHEMA["required"]) == {"decisions", "merged_text"}


def _decision(anchor, cands, actions, merged=None):
    from serve_app.maintenance.consolidation import CandidateDecision, text_hash

    return GroupDecision(
        anchor.id,
        tuple(CandidateDecision(c.id, a, "r") for c, a in zip(cands, actions, strict=True)),
        merged,
        "t",
        {e.id: text_hash(e.text) for e in (anchor, *cands)},
    )


def test_plan_merges_sources_in_order_and_tombstones():
    a = entry("a", "old dog", day=1, sources=["m1"])
    b = entry("b", "old job", day=2, sources=["m2"])
    k = entry("k", "keep me", day=3, sources=["m3"])
    n = entry("n", "new dog", day=5, sources=["m5"])
    d = _decision(n, [a, b, k], ["update", "delete", "keep"], merged="merged dog")
    plan = plan_group(d, {e.id: e for e in (a, b, k, n)})
    assert plan.new_text == "merged dog"
    assert plan.new_source_ids == ("m1", "m5")
    assert [(t.entry_id, t.action) for t in plan.tombstones] == [
        ("a", "merged"),
        ("b", "contradicted"),
    ]
    assert plan.merged_ids == ("a",)


def test_plan_is_stale_when_texts_changed_and_skips_removed_candidates():
    a = entry("a", "old", day=1)
    b = entry("b", "older", day=0)
    n = entry("n", "new", day=5)
    d = _decision(n, [a, b], ["delete", "update"], merged="new")
    # `b` was removed by an earlier group: only `a` is acted on.
    plan = plan_group(d, {"a": a, "n": n})
    assert [t.entry_id for t in plan.tombstones] == ["a"] and plan.new_text is None
    changed = Entry("a", "changed meanwhile", a.ts, a.session_id, a.source_message_ids)
    assert plan_group(d, {"a": changed, "n": n}) == "stale"
    assert plan_group(d, {"a": a}) == "stale"  # anchor gone
    keep = _decision(n, [a], ["keep"])
    assert plan_group(keep, {"a": a, "n": n}) == "unchanged"


def test_deciders_dedup_and_llm_through_resilient_client():
    anchor, cands = entry("n", "I like tea.", 5), [entry("a", "i like TEA"), entry("b", "x")]
    d = asyncio.run(DedupDecider(0.95).decide(anchor, cands))
    assert [c.action for c in d.decisions] == ["update", "keep"]

    good = json.dumps(
        {"decisions": [{"candidate": 2, "action": "delete", "reason": "r"}], "merged_text": None}
    )
    backend = ScriptedBackend(["not json", good])  # the repair retry gets the second reply
    llm = ResilientLLM([backend], policy=RetryPolicy(backoff_s=(), repair_attempts=1))
    d = asyncio.run(LLMDecider(llm).decide(anchor, cands))
    assert [c.action for c in d.decisions] == ["keep", "delete"]
    assert len(backend.calls) == 2 and d.decided_by == "llm:scripted"
