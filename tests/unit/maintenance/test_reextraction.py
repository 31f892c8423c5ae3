"""Re-extraction's pure part: which configuration builds a memory version, and the pipeline
over one session's stored messages (engines are doubles; buffers, segmentation, entry
building, the extraction prompt and its parser are the real ones)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.llm.base import LLMTransientError
from serve_app.llm.config import BackendSpec, LLMSettings
from serve_app.llm.resilience import LLMUnavailable, ResilientLLM, RetryPolicy
from serve_app.llm.scripted import Reply, Respond, ScriptedBackend
from serve_app.model.entries import entry_id
from serve_app.model.messages import StoredMessage
from serve_app.pipeline.compression import Compressed
from serve_app.pipeline.tokens import count_tokens
from tests.unit.ingest.doubles import bag_of_words

from serve_app.maintenance.reextraction import (  # isort: skip
    ExtractionSpec, ReextractConfigError, SessionExtractor, llm_record, resolve_llm,
    resolve_spec,
)  # fmt: skip

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
LINE = re.compile(r"^\[(m\d+)\] \d\d:\d\d ([^:]+): (.*)$")
OPENAI = BackendSpec(kind="openai", model="small", name="ep", base_url="http://h/v1",
                     api_key="secret")  # fmt: skip
SERVICE = LLMSettings(backends=[OPENAI])
ALL = sorted(f"x{i}" for i in range(12))


def spec(**kw) -> ExtractionSpec:
    base = dict(prompt=None, compress_rate=None, llm=None, entry_unit="message_ctx",
                sensory_max_tokens=40, short_term_max_tokens=60)  # fmt: skip
    return ExtractionSpec(**{**base, **kw})


def session(n: int = 12) -> list[StoredMessage]:
    topics = ["dog puppy leash park walk", "cello bow strings concert", "paris flight hotel"]
    return [
        StoredMessage("u", "s", f"x{i}", i, "user", ["Ann", "Bo"][i % 2],
                      f"{topics[(i // 4) % 3]} note {i}", T0 + timedelta(minutes=i))
        for i in range(n)
    ]  # fmt: skip


async def embed(texts):
    return [bag_of_words(t) for t in texts]


def cfg(compression: bool = True, llm: LLMSettings = SERVICE) -> dict:
    return {
        "llm_settings": llm,
        "compression": {"enabled": compression, "rate": 0.6 if compression else None,
                        "reason": "test"},
        "entry_unit": "message_ctx",
        "sensory_max_tokens": 512,
        "short_term_max_tokens": 512,
    }  # fmt: skip


def test_the_llm_is_the_services_unless_told_otherwise():
    assert resolve_llm(SERVICE) is SERVICE
    assert resolve_llm(LLMSettings()) is None  # the service is extractive
    assert resolve_llm(SERVICE, no_llm=True) is None
    other = resolve_llm(SERVICE, model="big")
    assert [(b.model, b.base_url, b.api_key.get_secret_value()) for b in other.backends] == [
        ("big", "http://h/v1", "secret")
    ]
    ep = resolve_llm(SERVICE, model="m2", base_url="http://other/v1", api_key="k")
    assert [(b.label, b.base_url, b.model) for b in ep.backends] == [
        ("reextract", "http://other/v1", "m2")
    ]
    assert llm_record(ep) == ({"backend": "reextract", "kind": "openai", "model": "m2"},)
    vllm_only = LLMSettings(backends=[BackendSpec(kind="vllm", model="q")])
    for bad in (
        lambda: resolve_llm(vllm_only, model="other"),  # in-cluster vLLM serves one model
        lambda: resolve_llm(SERVICE, base_url="http://x/v1"),  # which model?
        lambda: resolve_llm(SERVICE, no_llm=True, model="m"),
    ):
        with pytest.raises(ReextractConfigError):
            bad()


def test_spec_defaults_to_what_the_service_does_and_refuses_what_it_cannot():
    s, llm = resolve_spec({}, cfg())
    assert (s.compress_rate, s.entry_unit, s.sensory_max_tokens, s.prompt) == (
        0.6, "message_ctx", 512, None,
    )  # fmt: skip
    assert llm is SERVICE and s.llm == llm_record(SERVICE)
    s, llm = resolve_spec(
        {"no_compress": True, "no_llm": True, "entry_unit": "window2", "prompt": "P"}, cfg()
    )
    assert (s.compress_rate, s.llm, llm, s.entry_unit) == (None, None, None, "window2")
    record = s.record("job-1")
    assert record["prompt"] == "P" and len(record["prompt_sha256"]) == 64
    assert "secret" not in json.dumps(resolve_spec({}, cfg())[0].record("j"))
    with pytest.raises(ReextractConfigError, match="Compressor"):
        resolve_spec({"compress_rate": 0.5}, cfg(compression=False))
    with pytest.raises(ReextractConfigError, match="entry unit"):
        resolve_spec({"entry_unit": "sentence"}, cfg())
    with pytest.raises(ReextractConfigError, match="blank"):
        resolve_spec({"prompt": "  "}, cfg())


def test_extractive_entries_cover_every_message_once_with_ids_of_the_version():
    ex = SessionExtractor(spec(), version=3, embedding_model="e", embed=embed)
    messages = session()
    result = asyncio.run(ex.run(list(reversed(messages))))  # any order in, seq order used
    assert result.flushes >= 2  # small buffers: several flushes, several topics
    assert [r.source_message_ids for r in result.rows] == [[m.message_id] for m in messages]
    assert all(r.version == 3 for r in result.rows)
    assert [r.id for r in result.rows] == [
        entry_id("u", "s", "message", [m.message_id], 3) for m in messages
    ]
    # The previous message is the context of each entry, across flushes too (as the worker).
    assert all("(after " in r.index_text for r in result.rows[1:])
    assert result.rows[0].text.startswith("[8 May 2023, Monday] Ann: ")
    again = asyncio.run(ex.run(messages))
    assert [(r.id, r.index_text, r.topic_id) for r in again.rows] == [
        (r.id, r.index_text, r.topic_id) for r in result.rows
    ]  # deterministic: a redone session writes the same entries


def test_window_units_follow_the_segments():
    ex = SessionExtractor(spec(entry_unit="window2"), version=2, embedding_model="e", embed=embed)
    rows = asyncio.run(ex.run(session())).rows
    assert sorted(m for r in rows for m in r.source_message_ids) == ALL
    assert all(len(r.source_message_ids) <= 2 for r in rows)


def facts_reply(messages, schema) -> str:
    facts = [
        {"text": f"{m.group(2)} noted ({m.group(1)}): {m.group(3)}",
         "source_message_ids": [m.group(1)], "keywords": [], "entities": [m.group(2)],
         "time": None, "importance": 0.5}
        for line in messages[-1]["content"].splitlines()
        if (m := LINE.match(line))
    ]  # fmt: skip
    return json.dumps({"facts": facts, "summary": "a talk"})


def resilient(backend: ScriptedBackend) -> ResilientLLM:
    async def no_sleep(_):
        return None

    return ResilientLLM([backend], policy=RetryPolicy(backoff_s=(0.0,), timeout_s=5,
                        repair_attempts=1), failure_threshold=50, sleep=no_sleep)  # fmt: skip


def llm_spec(**kw) -> ExtractionSpec:
    return spec(llm=({"backend": "scripted", "kind": "openai", "model": "scripted"},), **kw)


def test_llm_extraction_uses_the_versions_prompt_and_compressed_text():
    backend = ScriptedBackend(default=Respond(facts_reply))
    compressed: list[str] = []

    async def compress(texts):
        compressed.extend(texts)
        return [Compressed(t, " ".join(t.split()[::2]), count_tokens(t),
                           count_tokens(" ".join(t.split()[::2]))) for t in texts]  # fmt: skip

    async def attend(windows):
        return [[0.5] * (len(w) - 1) for w in windows]

    ex = SessionExtractor(llm_spec(prompt="Only facts about pets.", compress_rate=0.5),
                          version=2, embedding_model="e", embed=embed, compress=compress,
                          attend=attend, llm=resilient(backend))  # fmt: skip
    messages = session()
    result = asyncio.run(ex.run(messages))
    assert len(compressed) == 12
    assert len(backend.calls) == result.flushes == result.usage.calls
    assert all(c.messages[0]["content"] == "Only facts about pets." for c in backend.calls)
    # The model reads the compressed text; the facts cite the real message ids.
    assert "dog leash walk" in backend.calls[0].messages[1]["content"]
    facts = [r for r in result.rows if r.kind == "fact"]
    assert sorted(m for r in facts for m in r.source_message_ids) == ALL
    assert len([r for r in result.rows if r.kind == "summary"]) == result.flushes
    assert all(r.version == 2 and r.metadata["llm_backend"] == "scripted" for r in result.rows)
    assert result.fallbacks == 0


def test_unusable_output_falls_back_to_extractive_entries_and_an_outage_raises():
    def first_flush_unusable(messages, schema):
        # The flush holding x0 never gets valid JSON, the others do.
        return (
            "not json"
            if "note 0\n" in messages[1]["content"] + "\n"
            else facts_reply(messages, schema)
        )

    backend = ScriptedBackend(default=Respond(first_flush_unusable))
    ex = SessionExtractor(llm_spec(), version=2, embedding_model="e", embed=embed,
                          llm=resilient(backend))  # fmt: skip
    result = asyncio.run(ex.run(session()))
    assert result.fallbacks == 1
    fallback = [r for r in result.rows if r.kind == "message"]
    assert fallback and all(r.metadata["llm_fallback"] for r in fallback)
    covered = sorted(m for r in result.rows if r.kind != "summary" for m in r.source_message_ids)
    assert covered == ALL  # every message still has a memory

    down = ScriptedBackend(default=Reply("x"))
    down.push(*[LLMTransientError("connection refused")] * 10)
    ex = SessionExtractor(llm_spec(), version=2, embedding_model="e", embed=embed,
                          llm=resilient(down))  # fmt: skip
    with pytest.raises(LLMUnavailable):
        asyncio.run(ex.run(session(3)))
