"""Idle flush: which sessions count as idle (the SQL, against the machine's PostgreSQL), how
often a worker asks, and the whole way from buffered messages to memories with no client
flush."""

from __future__ import annotations

from serve_app.ingest.idle import (
    MAX_CHECK_INTERVAL_S,
    MIN_CHECK_INTERVAL_S,
    IdleFlusher,
    check_interval,
)
from serve_app.ingest.loop import IngestLoops
from serve_app.storage.buffers_repo import BuffersRepo
from tests.unit.ingest.doubles import (
    Engines,
    add,
    cited,
    conversation,
    drain,
    entries,
    processor,
    statuses,
)


async def age(pool, user_id: str, session_id: str, seconds: float) -> None:
    """Make every stored message of the session `seconds` older."""
    await pool.execute(
        "UPDATE messages SET received_at = received_at - make_interval(secs => $3)"
        " WHERE user_id=$1 AND session_id=$2",
        user_id,
        session_id,
        float(seconds),
    )


def test_check_interval_is_a_quarter_of_the_idle_time_within_bounds():
    assert check_interval(8) == 2
    assert check_interval(0.1) == MIN_CHECK_INTERVAL_S
    assert check_interval(3600) == MAX_CHECK_INTERVAL_S


async def test_the_flusher_asks_at_once_then_once_per_interval():
    now = [100.0]
    asked: list[float] = []

    async def request(idle_s: float) -> list:
        asked.append(idle_s)
        return [("u", "s")]

    flusher = IdleFlusher(request, idle_s=8, clock=lambda: now[0])
    assert await flusher.maybe_request() == 1
    assert await flusher.maybe_request() == 0
    now[0] += 1.9
    assert await flusher.maybe_request() == 0
    now[0] += 0.1
    assert await flusher.maybe_request() == 1
    assert asked == [8, 8] and flusher.requested == 2


async def test_idle_time_zero_turns_it_off():
    async def request(idle_s: float) -> list:
        raise AssertionError("not asked when off")

    flusher = IdleFlusher(request, idle_s=0)
    assert not flusher.enabled
    assert await flusher.maybe_request() == 0


async def test_only_sessions_holding_messages_and_quiet_long_enough_are_asked_for(pool):
    proc = processor(pool, Engines())
    for session in ("quiet", "recent", "asked"):
        await add(pool, "u", session, conversation(3))
    await add(pool, "u", "flushed", conversation(3))
    await drain(proc)
    await BuffersRepo.request_flush(pool, "u", "flushed")
    await drain(proc)  # "flushed" now holds nothing
    await BuffersRepo.request_flush(pool, "u", "asked")  # outstanding request, not yet taken
    for session in ("quiet", "asked", "flushed"):
        await age(pool, "u", session, 120)
    # One recent message is enough to keep a session open.
    await age(pool, "u", "recent", 120)
    await pool.execute(
        "UPDATE messages SET received_at = now() WHERE session_id='recent' AND seq = 2"
    )

    assert await BuffersRepo.request_idle_flushes(pool, 60) == [("u", "quiet")]
    # Asked once: the request stands until a worker satisfies it.
    assert await BuffersRepo.request_idle_flushes(pool, 60) == []
    assert await BuffersRepo.request_idle_flushes(pool, 600) == []
    upto = await pool.fetchval("SELECT upto_seq FROM flush_requests WHERE session_id='quiet'")
    assert upto == 2


async def test_an_idle_session_becomes_memories_through_the_worker_loop(pool):
    engines = Engines()
    proc = processor(pool, engines)
    convo = conversation(5)
    await add(pool, "u", "s", convo)
    await drain(proc)
    assert set((await statuses(pool, "u")).values()) == {"buffered"}

    # A restarted worker: a new flusher, the idle time read from the stored messages.
    await age(pool, "u", "s", 61)
    flusher = IdleFlusher(lambda s: BuffersRepo.request_idle_flushes(pool, s), idle_s=60)
    loops = IngestLoops(proc, llm_step=None, metrics=_NoMetrics(), idle_poll_s=0.1, idle=flusher)
    while await loops._intake_step():
        pass
    assert loops.stats["idle_flushes"] == 1
    assert set((await statuses(pool, "u")).values()) == {"done"}
    assert sorted(cited(await entries(pool, "u"))) == sorted(m for m, _, _ in convo)
    assert await pool.fetchval("SELECT count(*) FROM flush_requests") == 0


class _NoMetrics:
    def record(self, totals) -> None:
        pass
