"""The ingest worker's pipeline (IngestProcessor) against the machine's PostgreSQL, without Ray.

The embedder, vector index and compressor are test doubles (external engines); the buffers,
segmentation, entry building and every query are the real ones.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.model.entries import topic_id
from serve_app.pipeline.tokens import count_tokens
from serve_app.storage.buffers_repo import BuffersRepo
from serve_app.storage.postgres import Repository
from tests.unit.ingest.doubles import (
    Engines,
    add,
    bag_of_words,
    cited,
    conversation,
    drain,
    entries,
    processor,
    statuses,
)

# --- tests -----------------------------------------------------------------------------------


async def test_messages_wait_in_the_buffers_until_the_short_term_buffer_fills(pool):
    engines = Engines()
    proc = processor(pool, engines)
    convo = conversation(4)
    await add(pool, "u", "s", convo)
    totals = await drain(proc)
    assert totals.messages == 4 and totals.flushes == 0 and totals.entries == 0
    assert set((await statuses(pool, "u")).values()) == {"buffered"}
    assert await entries(pool, "u") == []
    assert await Repository(pool).count_unfinished("u", "s", ["m0", "m3"]) == 2

    more = conversation(60)[4:]
    await add(pool, "u", "s", more, start_minute=4)
    totals = await drain(proc)
    assert totals.flushes >= 2 and totals.segments >= totals.flushes
    st = await statuses(pool, "u")
    done = {m for m, s in st.items() if s == "done"}
    assert done and set(st.values()) == {"done", "buffered"}
    rows = await entries(pool, "u")
    # A message is done exactly when its entry exists; buffered ones have none yet.
    assert sorted(cited(rows)) == sorted(done)
    assert set(engines.points) == {r["id"] for r in rows}
    for r in rows:
        assert r["topic_id"] == topic_id("s", r["metadata"]["topic_index"])
        assert "flush_index" in r["metadata"]
    status = await BuffersRepo.session_pipeline(pool, "u", "s")
    assert status["buffered_messages"] == len(st) - len(done) > 0
    assert status["flushes"] == totals.flushes


async def test_flush_request_turns_everything_buffered_into_memories(pool):
    engines = Engines()
    proc = processor(pool, engines)
    convo = conversation(9)
    await add(pool, "u", "s", convo)
    await drain(proc)
    assert set((await statuses(pool, "u")).values()) == {"buffered"}

    assert await BuffersRepo.request_flush(pool, "u", "s") == 8
    totals = await drain(proc)
    assert totals.flushes >= 1
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert sorted(cited(await entries(pool, "u"))) == sorted(m for m, _, _ in convo)
    assert await pool.fetchval("SELECT count(*) FROM flush_requests") == 0
    state = await pool.fetchval("SELECT state FROM session_buffers WHERE user_id='u'")
    assert state["pending"] == state["sensory"] == state["short_term"] == []
    # Nothing left to do: the next batch finds no work.
    assert not (await proc.process_batch()).did_work
    assert await BuffersRepo.request_flush(pool, "u", "nope") is None


async def test_a_flush_covers_messages_still_pending_when_it_is_requested(pool):
    engines = Engines()
    proc = processor(pool, engines, worker_batch_messages=4)
    convo = conversation(11)
    await add(pool, "u", "s", convo)
    await BuffersRepo.request_flush(pool, "u", "s")  # before any worker has read them
    await drain(proc)  # several batches of 4: the flush waits until all are read
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert sorted(cited(await entries(pool, "u"))) == sorted(m for m, _, _ in convo)


async def test_restart_mid_conversation_loses_nothing_and_repeats_nothing(pool):
    convo = conversation(80, seed=11)
    # Reference: one worker sees the whole conversation.
    await add(pool, "ref", "s", convo)
    await drain(processor(pool, Engines()))
    await BuffersRepo.request_flush(pool, "ref", "s")
    await drain(processor(pool, Engines()))
    expected = await entries(pool, "ref")

    # The same conversation in four parts, each by a fresh worker (a restart in between).
    engines = Engines()
    for start in range(0, 80, 20):
        await add(pool, "u", "s", convo[start : start + 20], start_minute=start)
        await drain(processor(pool, engines))
    await BuffersRepo.request_flush(pool, "u", "s")
    await drain(processor(pool, engines))
    got = await entries(pool, "u")

    assert sorted(cited(got)) == sorted(m for m, _, _ in convo)  # each message exactly once
    assert set((await statuses(pool, "u")).values()) == {"done"}

    def shape(rows):
        return [(r["source_message_ids"], r["topic_id"], r["index_text"]) for r in rows]

    assert shape(got) == shape(expected)


async def test_a_crash_before_commit_leaves_everything_to_the_retry(pool):
    engines = Engines()
    proc = processor(pool, engines)
    convo = conversation(40)
    await add(pool, "u", "s", convo)
    await BuffersRepo.request_flush(pool, "u", "s")
    engines.fail_index = True
    with pytest.raises(ConnectionError):
        await proc.process_batch()
    assert set((await statuses(pool, "u")).values()) == {"pending"}
    assert await pool.fetchval("SELECT state FROM session_buffers WHERE user_id='u'") == {}
    assert await entries(pool, "u") == []
    assert await pool.fetchval("SELECT raw_tokens FROM sessions WHERE user_id='u'") == 0
    assert await pool.fetchval("SELECT min(attempts) FROM messages WHERE user_id='u'") == 1

    engines.fail_index = False
    await drain(proc)
    rows = await entries(pool, "u")
    assert sorted(cited(rows)) == sorted(m for m, _, _ in convo)
    assert set(engines.points) == {r["id"] for r in rows}  # the retry overwrote, no extras


async def test_two_workers_never_process_one_session_together(pool):
    sessions = {f"s{k}": conversation(30, seed=k, prefix=f"k{k}-") for k in range(6)}
    for s, convo in sessions.items():
        await add(pool, "u", s, convo)
        await BuffersRepo.request_flush(pool, "u", s)
    engines = Engines()
    a = processor(pool, engines, worker_batch_sessions=2, worker_batch_messages=16)
    b = processor(pool, engines, worker_batch_sessions=2, worker_batch_messages=16)
    ta, tb = await asyncio.gather(drain(a), drain(b))
    assert ta.sessions and tb.sessions  # both took part
    rows = await entries(pool, "u")
    expected = [m for convo in sessions.values() for m, _, _ in convo]
    assert sorted(cited(rows)) == sorted(expected)
    assert ta.messages + tb.messages == len(expected)


async def test_claimed_sessions_are_disjoint(pool):
    for s in ("a", "b", "c"):
        await add(pool, "u", s, conversation(3, prefix=s))
    async with pool.acquire() as c1, pool.acquire() as c2, c1.transaction(), c2.transaction():
        first = await BuffersRepo.claim_sessions(c1, 2)
        second = await BuffersRepo.claim_sessions(c2, 5)
    assert len(first) == 2 and len(second) == 1
    assert {c.session_id for c in first} | {c.session_id for c in second} == {"a", "b", "c"}


async def test_compression_keeps_the_original_and_entries_index_it(pool):
    engines = Engines()
    proc = processor(pool, engines, compression=True)
    convo = conversation(30)
    await add(pool, "u", "s", convo)
    await BuffersRepo.request_flush(pool, "u", "s")
    await drain(proc)

    rows = await pool.fetch(
        "SELECT message_id, content, compressed, raw_tokens, compressed_tokens, status"
        " FROM messages WHERE user_id='u'"
    )
    for r in rows:
        assert r["status"] == "done"
        assert r["compressed"] == " ".join(r["content"].split()[::2])
        assert r["compressed_tokens"] < r["raw_tokens"] == count_tokens(r["content"])
    # Segmentation read the compressed texts (embedder and attention both).
    compressed = {r["compressed"] for r in rows}
    assert engines.attended and all(t in compressed for w in engines.attended for t in w)
    # Retrieval indexes the original: every entry states its message's full text.
    by_id = {r["message_id"]: r["content"] for r in rows}
    for e in await entries(pool, "u"):
        [mid] = e["source_message_ids"]
        assert by_id[mid] in e["text"] and by_id[mid] in e["index_text"]
    s = await BuffersRepo.session_pipeline(pool, "u", "s")
    assert s["raw_tokens"] == sum(r["raw_tokens"] for r in rows)
    assert s["compressed_tokens"] == sum(r["compressed_tokens"] for r in rows)
    assert 0.3 < s["compression_ratio"] < 0.8


async def test_token_accounting_per_session_and_per_user(pool):
    proc = processor(pool, Engines())
    one, two = conversation(10, prefix="a"), conversation(7, prefix="b")
    await add(pool, "u", "s1", one)
    await add(pool, "u", "s2", two)
    await add(pool, "v", "s1", one)
    totals = await drain(proc)
    raw1 = sum(count_tokens(t) for _, _, t in one)
    raw2 = sum(count_tokens(t) for _, _, t in two)
    assert totals.raw_tokens == 2 * raw1 + raw2
    s1 = await BuffersRepo.session_pipeline(pool, "u", "s1")
    assert s1["raw_tokens"] == s1["compressed_tokens"] == raw1  # compression off
    assert s1["compression_ratio"] == 1.0 and s1["llm_calls"] == 0
    user = await BuffersRepo.user_totals(pool, "u")
    assert user["sessions"] == 2 and user["raw_tokens"] == raw1 + raw2
    assert (await BuffersRepo.user_totals(pool, "v"))["raw_tokens"] == raw1
    assert await BuffersRepo.user_totals(pool, "nobody") is None
    # Nothing is counted twice on a later batch.
    await BuffersRepo.request_flush(pool, "u", "s1")
    await drain(proc)
    assert (await BuffersRepo.session_pipeline(pool, "u", "s1"))["raw_tokens"] == raw1


async def test_a_failing_session_does_not_hold_up_the_others(pool):
    engines = Engines()
    proc = processor(pool, engines, worker_max_attempts=2)
    bad = [(f"x{i}", "dog", f"POISON dog walk {i}") for i in range(3)]
    good = conversation(5, prefix="g")
    await add(pool, "u", "bad", bad)
    await add(pool, "u", "good", good)
    for s in ("bad", "good"):
        await BuffersRepo.request_flush(pool, "u", s)
    engines.embed_fail_on = "POISON"
    totals = await proc.process_batch()
    assert totals.failed_sessions == 1 and totals.sessions == 1
    st = await statuses(pool, "u")
    assert {st[m] for m, _, _ in good} == {"done"} and {st[m] for m, _, _ in bad} == {"pending"}
    await proc.process_batch()  # second attempt: given up on
    st = await statuses(pool, "u")
    assert {st[m] for m, _, _ in bad} == {"failed"}
    err = await pool.fetchval("SELECT last_error FROM messages WHERE message_id='x0'")
    assert "embedder refused" in err


async def test_the_plain_text_cut_follows_scripted_topic_shifts(pool):
    proc = processor(
        pool,
        Engines(),
        sensory_max_tokens=512,
        short_term_max_tokens=512,
        cut_on_entry_text=False,
    )
    convo = conversation(40, seed=5)
    await add(pool, "u", "s", convo)
    await BuffersRepo.request_flush(pool, "u", "s")
    await drain(proc)
    topic_of = {mid: t for mid, t, _ in convo}
    by_topic: dict[str, set[str]] = {}
    for e in await entries(pool, "u"):
        [mid] = e["source_message_ids"]
        by_topic.setdefault(e["topic_id"], set()).add(topic_of[mid])
    # Every segment holds one scripted topic, and there are as many segments as topic runs.
    assert all(len(t) == 1 for t in by_topic.values())
    runs = 1 + sum(a[1] != b[1] for a, b in zip(convo, convo[1:], strict=False))
    assert len(by_topic) == runs


async def _embed_once_run(pool, engines: Engines, user: str, prefix: str, **kw) -> list[dict]:
    """Three sessions in small batches (the first message of a batch finds its context in the
    buffers or, after a flush emptied them, in the stored messages), flushed twice."""
    proc = processor(pool, engines, worker_batch_messages=7, **kw)
    convo = {s: conversation(30, seed=i, prefix=f"{prefix}{s}-") for i, s in enumerate("xyz")}
    for start, end in ((0, 18), (18, 30)):
        for s, items in convo.items():
            await add(pool, user, s, items[start:end], start_minute=start)
            await BuffersRepo.request_flush(pool, user, s)
        await drain(proc)
    return await entries(pool, user)


async def test_cut_on_entry_text_embeds_each_message_once_and_keeps_the_entries(pool):
    before, once = Engines(), Engines()
    plain = await _embed_once_run(pool, before, "a", "a", cut_on_entry_text=False)
    rows = await _embed_once_run(pool, once, "b", "b", cut_on_entry_text=True)
    assert len(rows) == len(plain) == 90
    # Each message's entry index text went to the embedder exactly once, and nothing else did.
    assert sorted(once.embedded) == sorted(r["index_text"] for r in rows)
    assert len(before.embedded) > 1.9 * len(rows)  # the cut's texts, then the entries'
    # The same entries, indexed under the vector of a direct embed of their index text.
    strip = lambda rs: sorted((r["kind"], r["text"], r["index_text"]) for r in rs)  # noqa: E731
    assert strip(rows) == strip(plain)
    assert {r["metadata"]["unit"] for r in rows} == {"message_ctx"}
    for r in rows:
        vector = np.asarray(once.points[r["id"]].vector)
        assert np.array_equal(vector, bag_of_words(r["index_text"]))
        assert np.array_equal(vector, np.asarray(before.points[_twin(r, plain)].vector))


async def test_a_batch_embeds_what_its_cuts_read_in_one_call(pool):
    engines = Engines()
    proc = processor(pool, engines)  # 64-token sensory windows: several cuts per session
    for i, s in enumerate("xyz"):
        await add(pool, "one", s, conversation(20, seed=i, prefix=f"{s}-"))
        await BuffersRepo.request_flush(pool, "one", s)
    await drain(proc)
    rows = await entries(pool, "one")
    assert len(rows) == 60
    # One batch: its windows were cut, one after another, on vectors of that one call, and
    # the entries were written under them.
    assert [sorted(c) for c in engines.embed_calls] == [sorted(r["index_text"] for r in rows)]
    assert len({r["topic_id"] for r in rows}) > 3


def _twin(row: dict, plain: list[dict]) -> str:
    [twin] = [p["id"] for p in plain if p["index_text"] == row["index_text"]]
    return twin


async def test_cut_on_entry_text_leaves_window_units_and_compression_as_they_were(pool):
    for user, kw in (("w", {"entry_unit": "window2"}), ("c", {"compression": True})):
        engines = Engines()
        proc = processor(pool, engines, cut_on_entry_text=True, **kw)
        convo = conversation(20, prefix=user)
        await add(pool, user, "s", convo)
        await BuffersRepo.request_flush(pool, user, "s")
        await drain(proc)
        rows = await entries(pool, user)
        assert sorted(cited(rows)) == sorted(m for m, _, _ in convo)
        # The cut read the message text (compressed when on); the entries were embedded after.
        read = {t for _, _, t in convo} | {" ".join(t.split()[::2]) for _, _, t in convo}
        index_texts = {r["index_text"] for r in rows}
        assert index_texts <= set(engines.embedded) <= index_texts | read
        assert set(engines.embedded) & read
