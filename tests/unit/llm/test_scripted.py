from __future__ import annotations

import json

import jsonschema
import pytest

from serve_app.llm.base import LLMBackend, LLMTransientError
from serve_app.llm.extraction import build_extraction_request
from serve_app.llm.scripted import (
    Fail,
    Reply,
    ScriptedBackend,
    chat_prompt_tokens,
    schema_example,
    schema_example_responder,
)
from serve_app.llm.summaries import summary_schema
from tests.unit.llm.helpers import conversation, words


async def test_plays_the_script_in_order_and_records_every_prompt():
    b = ScriptedBackend(["one", LLMTransientError("x"), Reply("two", completion_tokens=7)])
    assert isinstance(b, LLMBackend)
    msgs = [{"role": "user", "content": "hi"}]
    assert (await b.chat_json(msgs, {}, max_tokens=5, temperature=0.1, timeout_s=1)).text == "one"
    with pytest.raises(LLMTransientError):
        await b.chat_json(msgs, {}, max_tokens=5, temperature=0.1, timeout_s=1)
    r = await b.chat_json(msgs, {"s": 1}, max_tokens=6, temperature=0.2, timeout_s=2)
    assert (r.text, r.completion_tokens) == ("two", 7)
    assert [c.max_tokens for c in b.calls] == [5, 5, 6]
    assert b.calls[2].schema == {"s": 1}
    with pytest.raises(AssertionError, match="exhausted"):
        await b.chat_json(msgs, {}, max_tokens=5, temperature=0, timeout_s=1)


async def test_default_step_and_push():
    b = ScriptedBackend(default=Fail(LLMTransientError("down")), count_tokens=words)
    b.push("later")
    msgs = [{"role": "user", "content": "a b"}]
    assert (await b.chat_json(msgs, {}, max_tokens=1, temperature=0, timeout_s=1)).text == "later"
    with pytest.raises(LLMTransientError):
        await b.chat_json(msgs, {}, max_tokens=1, temperature=0, timeout_s=1)
    assert b.remaining == 0


def test_prompt_tokens_follow_openai_chat_accounting():
    msgs = [{"role": "system", "content": "a b c"}, {"role": "user", "content": "d"}]
    assert chat_prompt_tokens(msgs, words) == (3 + 1 + 3) + (3 + 1 + 1) + 3


async def test_default_token_counts_are_cl100k():
    b = ScriptedBackend(["hello world"])
    r = await b.chat_json(
        [{"role": "user", "content": "hello world"}], {}, max_tokens=5, temperature=0, timeout_s=1
    )
    assert (r.prompt_tokens, r.completion_tokens) == (3 + 1 + 2 + 3, 2)


@pytest.mark.parametrize(
    "schema",
    [build_extraction_request(conversation()).schema, summary_schema()],
    ids=["extraction", "summary"],
)
def test_schema_example_validates(schema):
    jsonschema.validate(schema_example(schema), schema)
    jsonschema.validate(json.loads(schema_example_responder([], schema)), schema)


def test_schema_example_fills_min_items_and_enums():
    schema = {
        "type": "object",
        "required": ["ids", "n"],
        "properties": {
            "ids": {"type": "array", "minItems": 2, "items": {"enum": ["m1", "m2"]}},
            "n": {"type": "number", "minimum": 0.5},
            "skipped": {"type": "string"},
        },
    }
    assert schema_example(schema) == {"ids": ["m1", "m1"], "n": 0.5}
