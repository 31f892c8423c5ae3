from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import jsonschema
import pytest

from serve_app.llm.base import ParseError
from serve_app.llm.extraction import (
    SYSTEM_PROMPT,
    ExtractionLimits,
    SourceMessage,
    build_extraction_request,
    extract_memories,
    parse_extraction,
    render_messages,
)
from serve_app.llm.resilience import LLMOutputInvalid, ResilientLLM
from serve_app.llm.scripted import ScriptedBackend, schema_example
from tests.unit.llm.helpers import (
    T0,
    RecordingSleep,
    conversation,
    extraction_json,
    fact,
    words,
)


def test_prompt_labels_messages_and_shows_dates_for_absolute_times():
    req = build_extraction_request(conversation())
    assert req.labels == {"m1": "msg-000", "m2": "msg-001", "m3": "msg-002", "m4": "msg-003"}
    system, user = req.messages
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "never pronouns" in SYSTEM_PROMPT
    assert '"yesterday" in a message dated 2023-05-08 becomes "on 2023-05-07"' in SYSTEM_PROMPT
    assert user["role"] == "user"
    lines = user["content"].splitlines()
    assert lines[0] == "## 2023-05-08 (Monday)"
    assert lines[3] == (
        "[m3] 13:58 Caroline: I went to a LGBTQ support group yesterday and it was so powerful."
    )


def test_render_starts_a_new_day_header_and_collapses_whitespace():
    msgs = [
        SourceMessage("a", T0, "Ann", "late\n  night"),
        SourceMessage("b", T0 + timedelta(hours=11), "Bob", "next   day"),
    ]
    assert render_messages(msgs, ["m1", "m2"]) == (
        "## 2023-05-08 (Monday)\n[m1] 13:56 Ann: late night\n"
        "## 2023-05-09 (Tuesday)\n[m2] 00:56 Bob: next day"
    )


def test_schema_restricts_source_ids_to_the_input_labels_and_is_valid_json_schema():
    req = build_extraction_request(conversation(), ExtractionLimits(max_facts=3, fact_chars=50))
    jsonschema.Draft202012Validator.check_schema(req.schema)
    fact_schema = req.schema["properties"]["facts"]["items"]
    assert fact_schema["properties"]["source_message_ids"]["items"]["enum"] == [
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert req.schema["properties"]["facts"]["maxItems"] == 3
    assert fact_schema["properties"]["text"]["maxLength"] == 50
    bad = json.loads(extraction_json([fact("x", ["m9"])]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, req.schema)
    jsonschema.validate(schema_example(req.schema), req.schema)


def test_default_fact_limit_grows_with_the_buffer_and_is_capped():
    assert ExtractionLimits().facts_for(4) == 10
    assert ExtractionLimits().facts_for(100) == 40


def test_request_refuses_empty_or_duplicate_input():
    with pytest.raises(ValueError):
        build_extraction_request([])
    m = conversation()[0]
    with pytest.raises(ValueError):
        build_extraction_request([m, m])


def test_parse_maps_labels_to_message_ids_in_input_order():
    req = build_extraction_request(conversation())
    text = extraction_json(
        [
            fact(
                "Caroline went to an LGBTQ support group on 2023-05-07.",
                ["m3", "m1"],
                keywords=["support group", "LGBTQ", "lgbtq"],
                entities=["Caroline"],
                time="2023-05-07",
                importance=0.9,
            )
        ],
        summary="Caroline  tells Melanie\nabout a support group.",
    )
    out = parse_extraction(text, req)
    assert out.report.clean
    (f,) = out.facts
    assert f.source_message_ids == ("msg-000", "msg-002")
    assert f.time == date(2023, 5, 7)
    assert f.keywords == ("support group", "LGBTQ")  # case-insensitive duplicate dropped
    assert f.entities == ("Caroline",)
    assert f.importance == 0.9
    assert out.summary == "Caroline tells Melanie about a support group."


def test_parse_drops_unknown_source_ids_and_reports_them():
    req = build_extraction_request(conversation())
    text = extraction_json(
        [
            fact("Melanie painted a lake sunrise in 2022.", ["m4", "m7", "msg-003"]),
            fact("Invented fact.", ["m42"]),
        ]
    )
    out = parse_extraction(text, req)
    assert [f.text for f in out.facts] == ["Melanie painted a lake sunrise in 2022."]
    assert out.facts[0].source_message_ids == ("msg-003",)
    assert out.report.unknown_source_ids == ("m7", "msg-003", "m42")
    assert out.report.facts_without_source == 1
    assert not out.report.clean


def test_parse_accepts_the_label_forms_small_models_write():
    req = build_extraction_request(conversation())
    out = parse_extraction(extraction_json([fact("A fact.", ["[m1]", "M2", "3", 4])]), req)
    assert out.facts[0].source_message_ids == ("msg-000", "msg-001", "msg-002", "msg-003")
    assert out.report.clean


def test_parse_clamps_importance_and_nulls_bad_times():
    req = build_extraction_request(conversation())
    text = extraction_json(
        [
            fact("One.", ["m1"], importance=1.7, time="yesterday"),
            fact("Two.", ["m2"], importance=-0.2, time="2023-05-07T10:00:00Z"),
            fact("Three.", ["m3"], importance=0.3, time=None),
        ]
    )
    out = parse_extraction(text, req)
    assert [f.importance for f in out.facts] == [1.0, 0.0, 0.3]
    assert [f.time for f in out.facts] == [None, date(2023, 5, 7), None]
    assert out.report.importance_clamped == 2
    assert out.report.invalid_times == ("yesterday",)


def test_parse_drops_empty_and_duplicate_facts():
    req = build_extraction_request(conversation())
    text = extraction_json(
        [fact("Same  fact.", ["m1"]), fact("same fact.", ["m2"]), fact("  ", ["m3"])]
    )
    out = parse_extraction(text, req)
    assert len(out.facts) == 1
    assert out.report.duplicate_facts == 1
    assert out.report.empty_facts == 1


def test_parse_tolerates_code_fences_and_prose():
    req = build_extraction_request(conversation())
    body = extraction_json([fact("A fact.", ["m1"])])
    assert parse_extraction(f"```json\n{body}\n```", req).facts
    assert parse_extraction(f"Here you go:\n{body}\nHope it helps.", req).facts


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"facts": [', "invalid JSON"),
        ("I cannot do that.", "no JSON object"),
        ("[1, 2]", "no JSON object"),
        ('{"summary": "x"}', "facts: Field required"),
        ('{"facts": [{"text": "x"}], "summary": ""}', "facts.0.source_message_ids"),
        ('{"facts": [{"text": "x", "source_message_ids": ["m1"], "importance": "high"}]}', "imp"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, needle):
    req = build_extraction_request(conversation())
    with pytest.raises(ParseError) as exc:
        parse_extraction(text, req)
    assert needle in str(exc.value)


def test_source_message_from_stored_message_fields():
    @dataclass(frozen=True)
    class Stored:
        message_id: str
        role: str
        name: str | None
        content: str
        ts: datetime

    ts = datetime(2023, 5, 8, tzinfo=UTC)
    assert SourceMessage.from_stored(Stored("x", "user", "Ann", "hi", ts)) == SourceMessage(
        "x", ts, "Ann", "hi"
    )
    assert SourceMessage.from_stored(Stored("y", "assistant", None, "long", ts), "short") == (
        SourceMessage("y", ts, "assistant", "short")
    )


async def test_extract_memories_one_call_per_buffer_through_the_double():
    def responder(messages, schema):
        labels = schema["properties"]["facts"]["items"]["properties"]["source_message_ids"]
        first = labels["items"]["enum"][2]
        return extraction_json([fact("Caroline went to a support group.", [first])], "Chat.")

    backend = ScriptedBackend([responder], count_tokens=words)
    llm = ResilientLLM([backend], sleep=RecordingSleep())
    result = await extract_memories(llm, conversation(), max_tokens=300)
    assert len(backend.calls) == 1
    call = backend.calls[0]
    assert call.max_tokens == 300 and call.temperature == 0.0
    assert "[m3] 13:58 Caroline" in call.messages[1]["content"]
    assert result.value.facts[0].source_message_ids == ("msg-002",)
    assert result.calls == 1
    assert result.usage.prompt_tokens == result.reply.prompt_tokens > 0


async def test_bad_json_then_repair_retry_shows_the_model_its_error():
    good = extraction_json([fact("Melanie has kids.", ["m2"])])
    backend = ScriptedBackend(['{"facts": [ oops', good], count_tokens=words)
    llm = ResilientLLM([backend], sleep=RecordingSleep())
    result = await extract_memories(llm, conversation())
    assert [f.text for f in result.value.facts] == ["Melanie has kids."]
    assert len(backend.calls) == 2
    repair = backend.calls[1].messages
    assert repair[:2] == backend.calls[0].messages
    assert repair[2] == {"role": "assistant", "content": '{"facts": [ oops'}
    assert repair[3]["role"] == "user" and "invalid JSON" in repair[3]["content"]
    c = result.usage.counters("scripted", "scripted")
    assert (c.calls, c.parse_failures, c.repair_calls) == (2, 1, 1)


async def test_output_still_invalid_after_repair_is_reported_not_swallowed():
    backend = ScriptedBackend(["nope", '{"facts": "nope"}'], count_tokens=words)
    llm = ResilientLLM([backend], sleep=RecordingSleep())
    with pytest.raises(LLMOutputInvalid) as exc:
        await extract_memories(llm, conversation())
    assert exc.value.last_text == '{"facts": "nope"}'
    assert exc.value.usage.calls == 2
    assert llm.usage.counters("scripted", "scripted").parse_failures == 2
