from __future__ import annotations

import json
from datetime import date, timedelta

import jsonschema
import pytest

from serve_app.llm.base import ParseError
from serve_app.llm.resilience import ResilientLLM
from serve_app.llm.scripted import ScriptedBackend
from serve_app.llm.summaries import (
    KeyEvent,
    SessionNote,
    build_summary_request,
    parse_session_summary,
    select_notes,
    summarize_session,
    summary_schema,
)
from tests.unit.llm.helpers import T0, RecordingSleep, words

GOOD = {
    "title": "Support group and painting",
    "summary": "Caroline  told Melanie about an LGBTQ support group.",
    "topics": ["support group", "painting", "support group"],
    "participants": ["Caroline", "Melanie"],
    "key_events": [
        {"text": "Caroline went to an LGBTQ support group.", "date": "2023-05-07"},
        {"text": "Melanie painted a lake sunrise.", "date": None},
        {"text": "  ", "date": None},
    ],
    "open_items": ["Melanie wants to hear more."],
}


def notes() -> list[SessionNote]:
    return [
        SessionNote(T0, "Greeting and catching up.", "summary"),
        SessionNote(T0 + timedelta(minutes=1), "Melanie has kids.", "fact", 0.2),
        SessionNote(T0 + timedelta(minutes=2), "Caroline went to a support group.", "fact", 0.9),
        SessionNote(T0 + timedelta(minutes=3), "Talk about painting.", "summary"),
    ]


def test_request_lists_notes_in_time_order_with_dates():
    req = build_summary_request(notes(), participants=["Caroline", "Melanie"])
    user = req.messages[1]["content"].splitlines()
    assert user == [
        "Participants: Caroline, Melanie",
        "- 2023-05-08 [topic] Greeting and catching up.",
        "- 2023-05-08 [fact] Melanie has kids.",
        "- 2023-05-08 [fact] Caroline went to a support group.",
        "- 2023-05-08 [topic] Talk about painting.",
    ]
    assert (req.notes_used, req.notes_dropped) == (4, 0)
    jsonschema.Draft202012Validator.check_schema(req.schema)
    jsonschema.validate(GOOD, req.schema)


def test_budget_keeps_topic_summaries_then_the_most_important_facts():
    kept = select_notes(notes(), max_chars=len("Greeting and catching up.") + 130)
    assert [n.text for n in kept] == [
        "Greeting and catching up.",
        "Caroline went to a support group.",
        "Talk about painting.",
    ]
    with pytest.raises(ValueError):
        build_summary_request([])


def test_parse_summary():
    s = parse_session_summary(json.dumps(GOOD))
    assert s.summary == "Caroline told Melanie about an LGBTQ support group."
    assert s.topics == ("support group", "painting")
    assert s.key_events == (
        KeyEvent("Caroline went to an LGBTQ support group.", date(2023, 5, 7)),
        KeyEvent("Melanie painted a lake sunrise.", None),
    )
    text = s.as_text()
    assert text.startswith("Support group and painting\nCaroline told Melanie")
    assert "2023-05-07: Caroline went to an LGBTQ support group." in text
    assert "Open: Melanie wants to hear more." in text


@pytest.mark.parametrize(
    "text", ['{"title": "x"}', '{"summary": "  "}', '{"summary": "x", "topics": "a"}', "nope"]
)
def test_parse_summary_errors(text):
    with pytest.raises(ParseError):
        parse_session_summary(text)


async def test_summarize_session_through_the_double():
    backend = ScriptedBackend([json.dumps(GOOD)], count_tokens=words)
    llm = ResilientLLM([backend], sleep=RecordingSleep())
    result = await summarize_session(llm, notes(), participants=["Caroline"], max_tokens=200)
    assert result.value.title == "Support group and painting"
    assert backend.calls[0].schema == summary_schema()
    assert backend.calls[0].max_tokens == 200
    assert "Participants: Caroline" in backend.calls[0].messages[1]["content"]
