"""The LightMem pipeline in the running service: buffers, flush, restarts, token accounting.

The session fixture runs the application with the random LLMLingua-2 model, so compression
goes through the real llmlingua code in the Compressor replica group.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import asyncpg
import pytest

pytestmark = pytest.mark.integration

SENTENCES = {
    "dog": [
        "Alice adopted a golden retriever puppy named Max from the shelter last spring.",
        "Max loves chasing tennis balls in the park behind their apartment every morning.",
        "The vet said Max needs his second round of vaccinations before the end of June.",
        "Alice bought a red leash and a squeaky toy shaped like a duck for the puppy.",
    ],
    "cello": [
        "Bob started taking cello lessons with a teacher from the city conservatory.",
        "He practices scales and a Bach suite for forty minutes every evening after work.",
        "His first recital is planned for the autumn, in the small hall near the river.",
        "The teacher told him to hold the bow more loosely to get a warmer sound.",
    ],
    "trip": [
        "Carol booked a flight to Lisbon for the first week of September with her sister.",
        "They plan to ride the old yellow tram and eat pastel de nata in Belem.",
        "Their hotel is in Alfama, close to the castle and a famous fado restaurant.",
        "Carol is learning a few Portuguese phrases so she can order coffee politely.",
    ],
}


def conversation(prefix: str, n: int) -> list[dict]:
    topics = list(SENTENCES)
    out = []
    for i in range(n):
        topic = topics[(i // 4) % len(topics)]
        text = SENTENCES[topic][i % 4]
        out.append(
            {
                "role": "user" if i % 3 else "assistant",
                "name": ["Alice", "Bob", "Carol"][i % 3],
                "content": f"{text} (note {i})",
                "message_id": f"{prefix}{i}",
                "timestamp": f"2023-06-{1 + i // 20:02d}T10:{i % 60:02d}:00Z",
            }
        )
    return out


def add(c, user, session, messages, **kw):
    r = c.post(
        "/v1/memories",
        json={"user_id": user, "session_id": session, "messages": messages, **kw},
    )
    assert r.status_code in (200, 202), r.text
    return r


def session(c, user, sid) -> dict:
    r = c.get(f"/v1/sessions/{sid}?user_id={user}")
    assert r.status_code == 200, r.text
    return r.json()


def buffered(status: dict) -> int:
    m = status["messages"]
    return m["received"] - m["processed"] - m["pending"] - m["failed"]


def wait_for(c, user, sid, predicate, timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = session(c, user, sid)
        if predicate(st):
            return st
        assert time.monotonic() < deadline, f"timed out; last status {st}"
        time.sleep(0.2)


def all_memories(c, user) -> list[dict]:
    out, cursor = [], None
    while True:
        url = f"/v1/memories?user_id={user}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(url).json()
        out += page["memories"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


def cited(memories: list[dict]) -> list[str]:
    return sorted(i for m in memories for i in m["source_message_ids"])


def test_compression_is_on_with_the_random_model(running):
    with running.client() as c:
        ready = c.get("/readyz").json()
    detail = ready["checks"]["compressor"]
    assert detail["enabled"] is True and detail["ok"] is True, detail
    assert "bert-base-multilingual-cased" in detail["model"]
    assert detail["replica"]["rate"] == pytest.approx(0.6)


def test_buffers_survive_restarts_mid_conversation(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    convo = conversation("r", 60)
    with running.client() as c:
        add(c, user, "s", convo[:25])
        st = wait_for(c, user, "s", lambda s: s["messages"]["pending"] == 0)
        assert buffered(st) > 0, st  # some of the conversation waits in the buffers
        add(c, user, "s", convo[25:45])
    # The buffers live in PostgreSQL only; the second part may be mid-processing.
    running.restart_app()
    with running.client() as c:
        assert session(c, user, "s")["messages"]["received"] == 45
        r = add(c, user, "s", convo[45:], wait=True)
        assert r.status_code == 200 and r.json()["pending"] == 0, r.text
        st = session(c, user, "s")
        assert st["messages"]["processed"] == 60 and buffered(st) == 0, st
        memories = all_memories(c, user)
        # every message became exactly one memory: nothing lost, nothing twice
        assert cited(memories) == sorted(m["message_id"] for m in convo)
        assert st["memories"] == len(memories) == 60
        assert {m["metadata"]["unit"] for m in memories} == {"message_ctx"}


def test_flush_forces_out_what_the_session_buffered(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    convo = conversation("f", 8)  # well under the 512-token buffers
    with running.client() as c:
        add(c, user, "s", convo[:7])
        st = wait_for(c, user, "s", lambda s: s["messages"]["pending"] == 0)
        assert st["memories"] == 0 and buffered(st) == 7, st
        assert (
            c.post("/v1/search", json={"user_id": user, "query": "cello"}).json()["results"] == []
        )
        r = add(c, user, "s", convo[7:], flush=True)
        assert r.status_code == 202
        st = wait_for(c, user, "s", lambda s: s["messages"]["processed"] == 8)
        assert st["memories"] == 8 and buffered(st) == 0
        hits = c.post("/v1/search", json={"user_id": user, "query": "golden retriever"}).json()
        assert "golden retriever" in hits["results"][0]["memory"]


def test_wait_makes_the_request_searchable_without_flush(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        r = add(c, user, "s", conversation("w", 3), wait=True)
        assert r.status_code == 200 and r.json()["pending"] == 0
        hits = c.post("/v1/search", json={"user_id": user, "query": "puppy Max shelter"}).json()
        assert hits["results"] and hits["results"][0]["source_message_ids"] == ["w0"]


def test_token_accounting_with_compression(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    convo = conversation("t", 40)
    with running.client() as c:
        add(c, user, "s", convo, wait=True)
        st = session(c, user, "s")
        memories = all_memories(c, user)
    tokens = st["tokens"]
    assert 0 < tokens["compressed"] < tokens["raw"], tokens
    assert tokens["compression_ratio"] == pytest.approx(tokens["compressed"] / tokens["raw"], 1e-3)
    assert st["pipeline"]["segments"] >= st["pipeline"]["flushes"] >= 1
    assert tokens["llm_calls"] == 0 and tokens["llm_input"] == 0  # no LLM in this build
    # Retrieval indexes the original text; the compressed one is kept beside it.
    originals = {m["message_id"]: m["content"] for m in convo}
    for m in memories:
        [mid] = m["source_message_ids"]
        assert originals[mid] in m["memory"]

    async def rows():
        conn = await asyncpg.connect(running.service.settings.pg_dsn)
        try:
            return await conn.fetch(
                "SELECT m.content, m.compressed, m.raw_tokens, m.compressed_tokens,"
                " s.raw_tokens AS s_raw, s.compressed_tokens AS s_comp, s.segments, s.flushes"
                " FROM messages m JOIN sessions s USING (user_id, session_id)"
                " WHERE m.user_id=$1",
                user,
            )
        finally:
            await conn.close()

    found = asyncio.run(rows())
    assert len(found) == 40 and all(r["compressed"] for r in found)
    assert sum(r["raw_tokens"] for r in found) == tokens["raw"] == found[0]["s_raw"]
    assert sum(r["compressed_tokens"] for r in found) == tokens["compressed"]
    assert found[0]["segments"] >= found[0]["flushes"] >= 1


def test_pipeline_counters_reach_rays_prometheus_endpoint(running):
    user = f"u-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        add(c, user, "s", conversation("p", 5), wait=True)
    url = f"http://127.0.0.1:{running.service.settings.ray_port_base + 8}/metrics"
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        if "memserve_pipeline_raw_tokens" in text:
            break
        time.sleep(2)
    lines = [x for x in text.splitlines() if x.startswith("ray_memserve_pipeline_raw_tokens")]
    assert lines, "pipeline counters not exported"
    assert any('compression="on"' in x and 'deployment="IngestWorker"' in x for x in lines)
    assert not any(user in x for x in text.splitlines())  # no per-user series
