"""The ingest worker's LLM step (LLMStep) against the machine's PostgreSQL, without Ray.

The LLM is the scripted engine double behind the real ResilientLLM (retries, repair, breaker);
the embedder and vector index are doubles; the task queue, leases, entries and accounting are
the real queries. The first tests queue extraction tasks directly; the last ones go through the
whole worker (IngestProcessor intake, buffers, flush) with the LLM on.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.ingest.llm_step import LLMStep
from serve_app.llm.base import LLMTransientError
from serve_app.llm.config import LLMSettings
from serve_app.llm.resilience import ResilientLLM, RetryPolicy
from serve_app.llm.scripted import Respond, ScriptedBackend
from serve_app.model.entries import entry_id
from serve_app.model.messages import NewMessage
from serve_app.storage.buffers_repo import BuffersRepo
from serve_app.storage.llm_tasks_repo import LLMTasksRepo, TaskSegment
from serve_app.storage.postgres import Repository
from tests.unit.ingest.doubles import (
    Engines,
    add,
    conversation,
    drain_llm,
    entries,
    processor,
    statuses,
)
from tests.unit.ingest.doubles import drain as drain_intake

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
LINE = re.compile(r"^\[(m\d+)\] \d\d:\d\d ([^:]+): (.*)$")


def facts_reply(messages, schema) -> str:
    """A well-behaved model: one fact per message, citing it, plus a topic summary."""
    facts = []
    for line in messages[-1]["content"].splitlines():
        m = LINE.match(line)
        if m:
            label, speaker, text = m.groups()
            facts.append(
                {
                    "text": f"{speaker} said: {text}",
                    "source_message_ids": [label],
                    "keywords": text.split()[:2],
                    "entities": [speaker],
                    "time": "2023-05-07",
                    "importance": 0.8,
                }
            )
    return json.dumps({"facts": facts, "summary": f"A talk of {len(facts)} messages."})


def summary_reply(messages, schema) -> str:
    return json.dumps(
        {
            "title": "Catching up",
            "summary": "Ann and Bo talked about dogs and cellos.",
            "topics": ["dogs", "cellos"],
            "participants": ["Ann", "Bo"],
            "key_events": [{"text": "Ann adopted a dog", "date": "2023-05-07"}],
            "open_items": ["Bo's recital"],
        }
    )


def reply_for(messages, schema) -> str:
    if "key_events" in schema["properties"]:
        return summary_reply(messages, schema)
    return facts_reply(messages, schema)


def make_llm(backend: ScriptedBackend, **kw) -> ResilientLLM:
    async def no_sleep(_: float) -> None:
        return None

    return ResilientLLM(
        [backend],
        policy=RetryPolicy(backoff_s=(0.0,), timeout_s=5, repair_attempts=1),
        failure_threshold=kw.get("failure_threshold", 2),
        reset_timeout_s=kw.get("reset_timeout_s", 0.2),
        sleep=no_sleep,
    )


def llm_settings() -> LLMSettings:
    return LLMSettings(backoff_s=(0.05,))


def construction(pool, engines: Engines, llm: ResilientLLM | None) -> LLMStep:
    return LLMStep(
        Repository(pool),
        engines.embed,
        engines.index,
        embedding_model="double",
        llm=llm,
        llm_settings=llm_settings(),
        concurrency=4,
    )


TEXTS = [
    ("Ann", "I adopted a puppy named Max yesterday."),
    ("Bo", "Congratulations! I started cello lessons."),
    ("Ann", "Max chews everything, even my shoes."),
    ("Bo", "My recital is next Friday at the conservatory."),
]


async def buffered_flush(pool, user: str, session: str, flush_index: int = 0) -> list[str]:
    """Store the messages, mark them buffered, queue one extraction task over two topics."""
    ids = [f"{session}-m{i}" for i in range(len(TEXTS))]
    await Repository(pool).add_messages(
        user,
        session,
        [
            NewMessage(
                message_id=mid,
                role="user",
                name=name,
                content=text,
                ts=T0 + timedelta(minutes=i),
                ts_provided=True,
                metadata={},
            )
            for i, (mid, (name, text)) in enumerate(zip(ids, TEXTS, strict=True))
        ],
        None,
    )
    await pool.execute(
        "UPDATE messages SET status='buffered' WHERE user_id=$1 AND session_id=$2", user, session
    )
    await LLMTasksRepo.enqueue_extract(
        pool,
        user,
        session,
        flush_index,
        [TaskSegment(0, tuple(ids[:2])), TaskSegment(1, tuple(ids[2:]))],
    )
    return ids


# --- extraction ------------------------------------------------------------------------------


async def test_facts_become_entries_with_provenance_and_a_topic_summary(pool):
    ids = await buffered_flush(pool, "u", "s")
    engines = Engines()
    backend = ScriptedBackend(default=Respond(reply_for))
    totals = await construction(pool, engines, make_llm(backend)).process()
    assert totals.extracted == 1 and totals.done == 4 and totals.llm_calls == 1

    rows = await entries(pool, "u", by_kind=True)
    facts = [r for r in rows if r["kind"] == "fact"]
    [summary] = [r for r in rows if r["kind"] == "summary"]
    assert [r["source_message_ids"] for r in facts] == [[i] for i in ids]
    for r, (name, text) in zip(facts, TEXTS, strict=True):
        assert r["text"] == r["index_text"] == f"{name} said: {text}"
        assert r["metadata"]["entities"] == [name]
        assert r["metadata"]["time"] == "2023-05-07"
        assert r["metadata"]["llm_backend"] == "scripted"
        assert r["importance"] == pytest.approx(0.8)
    assert [r["topic_id"] for r in facts] == ["s/0", "s/0", "s/1", "s/1"]
    assert summary["text"] == "A talk of 4 messages." and summary["source_message_ids"] == ids
    # The fact text is what gets embedded and indexed.
    assert set(engines.points) == {r["id"] for r in rows}
    assert {r["text"] for r in rows} <= set(engines.embedded)

    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert await pool.fetchval("SELECT count(*) FROM llm_tasks") == 0
    s = await pool.fetchrow("SELECT * FROM sessions WHERE user_id='u'")
    call = backend.calls[0]
    assert s["llm_calls"] == 1 and s["llm_input_tokens"] > 0 and s["llm_output_tokens"] > 0
    assert "[m1]" in call.messages[-1]["content"]  # labels, not message ids, in the prompt
    [usage] = await LLMTasksRepo.usage_totals(pool)
    assert usage["backend"] == "scripted" and usage["calls"] == 1
    assert usage["prompt_tokens"] == s["llm_input_tokens"]


async def test_compressed_text_is_what_the_llm_reads(pool):
    await buffered_flush(pool, "u", "s")
    await pool.execute("UPDATE messages SET compressed = 'short ' || message_id")
    backend = ScriptedBackend(default=Respond(reply_for))
    await construction(pool, Engines(), make_llm(backend)).process()
    prompt = backend.calls[0].messages[-1]["content"]
    assert "short s-m0" in prompt and "puppy" not in prompt


async def test_unavailable_llm_leaves_the_buffer_pending_then_completes_once(pool):
    ids = await buffered_flush(pool, "u", "s")
    engines = Engines()
    backend = ScriptedBackend(default=Respond(reply_for))
    backend.push(*(LLMTransientError("connection refused") for _ in range(2)))
    # The breaker opens after the two failures and cools down for 2 s: the task's retry time.
    step = construction(pool, engines, make_llm(backend, reset_timeout_s=2.0))

    totals = await step.process()
    assert totals.unavailable == 1 and totals.done == 0
    assert set((await statuses(pool, "u")).values()) == {"buffered"}  # kept, not failed
    assert await entries(pool, "u", by_kind=True) == []
    task = await pool.fetchrow("SELECT * FROM llm_tasks")
    assert task["status"] == "pending" and "connection refused" in task["last_error"]
    assert task["not_before"] > await pool.fetchval("SELECT now()")
    st = await LLMTasksRepo.session_status(pool, "u", "s")
    assert st["waiting_tasks"] == 1 and st["waiting_messages"] == 4 and not st["failed"]
    # Not due yet: the next round does nothing (no busy loop against a dead LLM).
    assert not (await step.process()).did_work

    await asyncio.sleep(2.1)  # past not_before and the breaker's cool-down
    await drain_llm(step)
    assert set((await statuses(pool, "u")).values()) == {"done"}
    rows = await entries(pool, "u", by_kind=True)
    assert sorted(i for r in rows if r["kind"] == "fact" for i in r["source_message_ids"]) == ids
    assert len(rows) == 5 and set(engines.points) == {r["id"] for r in rows}
    # Failed calls are counted too.
    s = await pool.fetchrow("SELECT llm_calls FROM sessions")
    assert s["llm_calls"] == len(backend.calls) == 3


async def test_invalid_output_marks_the_buffer_failed_and_retry_recovers_it(pool):
    ids = await buffered_flush(pool, "u", "s")
    backend = ScriptedBackend(default=Respond(reply_for))
    backend.push("this is not JSON", '{"facts": "nope"}')  # first try + one repair
    step = construction(pool, Engines(), make_llm(backend))

    totals = await step.process()
    assert totals.failed == 4
    assert set((await statuses(pool, "u")).values()) == {"failed"}
    err = await pool.fetchval("SELECT last_error FROM messages WHERE message_id=$1", ids[0])
    assert "LLMOutputInvalid" in err
    st = await LLMTasksRepo.session_status(pool, "u", "s")
    assert st["waiting_tasks"] == 0
    [failed] = st["failed"]
    assert failed["kind"] == "extract" and failed["messages"] == 4
    assert "LLMOutputInvalid" in failed["error"]
    assert not (await step.process()).did_work  # failed stays failed until asked

    assert await LLMTasksRepo.retry_failed(pool, "u", "s") == {"tasks": 1, "messages": 4}
    assert set((await statuses(pool, "u")).values()) == {"buffered"}
    await drain_llm(step)
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert len(await entries(pool, "u", by_kind=True)) == 5
    assert (await LLMTasksRepo.session_status(pool, "u", "s"))["failed"] == []
    assert await LLMTasksRepo.retry_failed(pool, "u", "nope") is None


async def test_a_crashed_workers_lease_runs_out_and_its_late_result_is_dropped(pool):
    await buffered_flush(pool, "u", "s")
    [stale] = await LLMTasksRepo.claim(pool, 5, lease_s=1.0)  # a worker that then dies
    assert await LLMTasksRepo.claim(pool, 5, lease_s=1.0) == []  # leased: nobody else
    await asyncio.sleep(1.1)
    engines = Engines()
    await construction(
        pool, engines, make_llm(ScriptedBackend(default=Respond(reply_for)))
    ).process()
    assert set((await statuses(pool, "u")).values()) == {"done"}
    async with pool.acquire() as conn, conn.transaction():
        assert not await LLMTasksRepo.hold(conn, stale)  # the dead worker cannot commit
    assert len(await entries(pool, "u", by_kind=True)) == 5


async def test_without_llm_queued_buffers_become_extractive_entries(pool):
    ids = await buffered_flush(pool, "u", "s")
    await LLMTasksRepo.enqueue_summary(pool, "u", "s")
    await construction(pool, Engines(), None).process()
    rows = await entries(pool, "u", by_kind=True)
    assert {r["kind"] for r in rows} == {"message"}
    assert sorted(i for r in rows for i in r["source_message_ids"]) == ids
    assert set((await statuses(pool, "u")).values()) == {"done"}
    # A summary needs an LLM: it waits for one.
    assert await pool.fetchval("SELECT kind FROM llm_tasks") == "summary"


# --- session summaries -----------------------------------------------------------------------


async def test_session_summary_waits_for_extraction_and_is_stored(pool):
    await buffered_flush(pool, "u", "s")
    assert await LLMTasksRepo.enqueue_summary(pool, "u", "s")
    assert not await LLMTasksRepo.enqueue_summary(pool, "u", "nope")
    # While the extraction is queued, the summary is not ready.
    [first] = await LLMTasksRepo.claim(pool, 5, lease_s=0.1)
    assert first.kind == "extract"
    await asyncio.sleep(0.2)

    backend = ScriptedBackend(default=Respond(reply_for))
    await drain_llm(construction(pool, Engines(), make_llm(backend)))
    assert len(backend.calls) == 2
    s = await pool.fetchrow("SELECT * FROM sessions WHERE user_id='u'")
    assert s["summary"].startswith("Catching up\nAnn and Bo talked about dogs and cellos.")
    assert s["summary_json"]["key_events"] == [{"text": "Ann adopted a dog", "date": "2023-05-07"}]
    assert s["llm_calls"] == 2
    prompt = backend.calls[1].messages[-1]["content"]
    assert "Participants: Ann, Bo" in prompt and "[topic] A talk of 4 messages." in prompt
    assert (await LLMTasksRepo.session_status(pool, "u", "s"))["summary_at"] is not None
    assert await pool.fetchval("SELECT count(*) FROM llm_tasks") == 0


async def test_summary_of_a_session_without_notes_makes_no_call(pool):
    await Repository(pool).add_messages(
        "u",
        "s",
        [NewMessage("m0", "user", "Ann", "hi", T0, True, {})],
        None,
    )
    await pool.execute("UPDATE messages SET status='done'")
    await LLMTasksRepo.enqueue_summary(pool, "u", "s")
    backend = ScriptedBackend(default=Respond(reply_for))
    await drain_llm(construction(pool, Engines(), make_llm(backend)))
    assert backend.calls == [] and await pool.fetchval("SELECT count(*) FROM llm_tasks") == 0


# --- the whole worker: intake queues, the LLM step constructs -------------------------------


def llm_processor(pool, engines: Engines):
    proc = processor(pool, engines)
    proc.llm_queue = True
    return proc


async def fact_sources(pool, user: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT source_message_ids FROM memory_entries WHERE user_id=$1 AND kind='fact'", user
    )
    return sorted(i for r in rows for i in r["source_message_ids"])


async def test_each_flushed_buffer_is_one_llm_call_and_the_session_end_brings_a_summary(pool):
    engines = Engines()
    proc = llm_processor(pool, engines)
    convo = conversation(40)
    await add(pool, "u", "s", convo)
    totals = await drain_intake(proc)
    assert totals.flushes >= 1 and totals.done == 0 and totals.entries == 0
    st = await statuses(pool, "u")
    assert set(st.values()) == {"buffered"}  # flushed ones wait for the LLM, nothing is lost
    tasks = await pool.fetch("SELECT * FROM llm_tasks ORDER BY flush_index")
    assert [t["flush_index"] for t in tasks] == list(range(totals.flushes))
    assert all(t["kind"] == "extract" for t in tasks)

    await BuffersRepo.request_flush(pool, "u", "s", summarize=True)
    more = await drain_intake(proc)
    kinds = [r["kind"] for r in await pool.fetch("SELECT kind FROM llm_tasks")]
    assert kinds.count("extract") == totals.flushes + more.flushes and "summary" in kinds
    queued = await pool.fetch("SELECT message_ids FROM llm_tasks WHERE kind='extract'")
    assert sorted(i for r in queued for i in r["message_ids"]) == sorted(m for m, _, _ in convo)

    backend = ScriptedBackend(default=Respond(reply_for))
    await drain_llm(construction(pool, engines, make_llm(backend)), 50)
    assert len(backend.calls) == totals.flushes + more.flushes + 1  # one per flush + summary
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert await fact_sources(pool, "u") == sorted(m for m, _, _ in convo)
    s = await pool.fetchrow("SELECT * FROM sessions WHERE user_id='u'")
    assert s["summary"] and s["llm_calls"] == len(backend.calls)
    assert s["flushes"] == totals.flushes + more.flushes
    assert await pool.fetchval("SELECT count(*) FROM llm_tasks") == 0


async def test_a_flush_for_wait_alone_asks_for_no_summary(pool):
    proc = llm_processor(pool, Engines())
    await add(pool, "u", "s", conversation(8))
    await BuffersRepo.request_flush(pool, "u", "s")
    await drain_intake(proc)
    kinds = {r["kind"] for r in await pool.fetch("SELECT kind FROM llm_tasks")}
    assert kinds == {"extract"}


async def test_llm_outage_with_restarts_loses_nothing_and_duplicates_nothing(pool):
    engines = Engines()
    convo = conversation(60, seed=7)
    other = conversation(20, seed=8, prefix="o")
    down = ScriptedBackend(default=Respond(reply_for))
    down.push(*(LLMTransientError("connection refused") for _ in range(100)))

    # First worker: the LLM is down; intake goes on for both sessions.
    await add(pool, "u", "s", convo[:30])
    await drain_intake(llm_processor(pool, engines))
    step = construction(pool, engines, make_llm(down))
    await step.process()
    await add(pool, "u", "s", convo[30:], start_minute=30)
    await add(pool, "u", "other", other)
    await BuffersRepo.request_flush(pool, "u", "s", summarize=True)
    await BuffersRepo.request_flush(pool, "u", "other")
    await drain_intake(llm_processor(pool, engines))  # a restarted worker
    await step.process()
    st = await statuses(pool, "u")
    assert set(st.values()) == {"buffered"} and len(st) == 80
    assert await pool.fetchval("SELECT count(*) FROM memory_entries") == 0
    waiting = await pool.fetchval("SELECT count(*) FROM llm_tasks WHERE status='pending'")
    assert waiting >= 3

    # Another restart, and the LLM is back.
    await asyncio.sleep(0.4)
    await drain_llm(
        construction(pool, engines, make_llm(ScriptedBackend(default=Respond(reply_for)))), 50
    )
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert await fact_sources(pool, "u") == sorted(m for m, _, _ in convo + other)
    ids = await pool.fetch("SELECT id::text AS id FROM memory_entries")
    assert set(engines.points) == {r["id"] for r in ids}  # no stray vector points
    assert await pool.fetchval("SELECT summary IS NOT NULL FROM sessions WHERE session_id='s'")
    assert await pool.fetchval("SELECT count(*) FROM llm_tasks") == 0


# --- memory versions --------------------------------------------------------------------------


async def _active_version(pool, version: int, extraction: dict) -> None:
    await pool.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version, extraction) VALUES (0, 'double', 3, 'c', 'active', $1, $2)",
        version,
        extraction,
    )


async def test_entries_go_into_the_active_version_with_its_prompt(pool):
    await _active_version(pool, 2, {"prompt": "Extract pets only."})
    ids = await buffered_flush(pool, "u", "s")
    engines = Engines()
    backend = ScriptedBackend(default=Respond(reply_for))
    await construction(pool, engines, make_llm(backend)).process()
    assert backend.calls[0].messages[0]["content"] == "Extract pets only."
    rows = await pool.fetch("SELECT id::text AS id, kind, version FROM memory_entries")
    assert {r["version"] for r in rows} == {2} and engines.versions == {2}
    facts = sorted(r["id"] for r in rows if r["kind"] == "fact")
    assert facts == sorted(
        entry_id("u", "s", "fact", ["flush:0", str(i)], 2) for i in range(len(ids))
    )
    versions = await pool.fetch("SELECT DISTINCT versions FROM messages")
    assert [r["versions"] for r in versions] == [[2]]


async def test_a_switch_during_the_llm_call_runs_the_task_again_in_the_new_version(pool):
    await _active_version(pool, 1, {})
    await buffered_flush(pool, "u", "s")
    await pool.execute(
        "INSERT INTO vector_generations (generation, embedding_model, dim, collection, status,"
        " memory_version) VALUES (1, 'double', 3, 'c1', 'building', 2)"
    )

    engines = Engines()
    backend = ScriptedBackend(default=Respond(reply_for))
    step = construction(pool, engines, make_llm(backend))
    original = step.llm.call

    async def call_and_switch(*a, **kw):
        out = await original(*a, **kw)
        if len(backend.calls) == 1:  # the operator switches while the first call runs
            await pool.execute(
                "UPDATE vector_generations SET status = CASE generation WHEN 0 THEN 'previous'"
                " ELSE 'active' END"
            )
        return out

    step.llm.call = call_and_switch
    first = await step.process()
    assert first.postponed == 1 and first.extracted == 0
    await asyncio.sleep(0.2)
    await drain_llm(step)
    assert len(backend.calls) == 2
    assert {r["version"] for r in await pool.fetch("SELECT version FROM memory_entries")} == {2}


async def test_extractive_worker_uses_the_active_versions_entry_unit(pool):
    await _active_version(pool, 3, {"entry_unit": "window2"})
    engines = Engines()
    proc = processor(pool, engines)
    convo = conversation(9)
    await add(pool, "u", "s", convo)
    await BuffersRepo.request_flush(pool, "u", "s")
    await drain_intake(proc)
    rows = await pool.fetch("SELECT version, metadata, source_message_ids FROM memory_entries")
    assert rows and {r["version"] for r in rows} == {3} and engines.versions == {3}
    assert {r["metadata"]["unit"] for r in rows} == {"window2"}
    assert sorted(m for r in rows for m in r["source_message_ids"]) == sorted(
        m for m, _, _ in convo
    )
    versions = await pool.fetch("SELECT DISTINCT versions FROM messages")
    assert [r["versions"] for r in versions] == [[3]]
