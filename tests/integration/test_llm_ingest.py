"""LLM memory construction in the running service, against an OpenAI-compatible double on
loopback (tests/integration/openai_double.py: a real HTTP server, stopped and started again to
play an LLM that dies mid-ingestion).

The session's application runs without an LLM; this module gives the IngestWorker LLM backends
live, through its Serve `user_config` (what an operator would do), and takes them away at the
end, without restarting any replica.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest
import yaml
from ray import serve

from tests.integration.openai_double import OpenAIDouble

pytestmark = pytest.mark.integration

TOPICS = [
    "Alice adopted a golden retriever puppy named Max from the shelter",
    "Bob practices a Bach suite on his cello every evening after work",
    "Carol booked a flight to Lisbon for the first week of September",
    "Dan is growing basil and tomatoes on his balcony this summer",
]


def _worker(config: dict) -> dict:
    deployments = (d for app in config["applications"] for d in app["deployments"])
    return next(d for d in deployments if d["name"] == "IngestWorker")


def _deploy_with(running, tmp_path, user_config: dict) -> None:
    config = yaml.safe_load(running.service.config_path.read_text())
    _worker(config)["user_config"] = user_config
    path = tmp_path / f"llm-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    original = running.service.config_path
    running.service.config_path = path
    try:
        running.service.deploy()
    finally:
        running.service.config_path = original


@pytest.fixture(scope="module")
def llm_service(running, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llm-config")
    double = OpenAIDouble()
    double.start()
    llm = {
        "backends": [
            {"kind": "openai", "base_url": double.base_url, "model": "double", "name": "double"}
        ],
        "timeout_s": 10,
        "backoff_s": [0.2],
        "failure_threshold": 2,
        "reset_timeout_s": 1.0,
    }
    _deploy_with(running, tmp, {"llm": llm})
    try:
        yield running, double
    finally:
        double.stop()
        # Back to the environment's settings (no LLM), then to the plain config file.
        _deploy_with(running, tmp, {"llm": None})
        running.service.deploy()


def worker():
    return serve.get_deployment_handle("IngestWorker", app_name="memserve")


def messages(prefix: str, n: int) -> list[dict]:
    return [
        {
            "role": "user" if i % 2 else "assistant",
            "name": ["Alice", "Bob", "Carol", "Dan"][i % 4],
            "content": f"{TOPICS[(i // 3) % len(TOPICS)]} (note {prefix}{i}).",
            "message_id": f"{prefix}{i}",
            "timestamp": f"2023-06-01T10:{i:02d}:00Z",
        }
        for i in range(n)
    ]


def add(c, user: str, session: str, msgs: list[dict]) -> None:
    r = c.post("/v1/memories", json={"user_id": user, "session_id": session, "messages": msgs})
    assert r.status_code in (200, 202), r.text


def session_status(c, user: str, session: str) -> dict:
    r = c.get(f"/v1/sessions/{session}", params={"user_id": user})
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(c, user: str, session: str, done, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = session_status(c, user, session)
        if done(st):
            return st
        assert time.monotonic() < deadline, f"timed out: {st}"
        time.sleep(0.3)


def memories(c, user: str, session: str) -> list[dict]:
    r = c.get("/v1/memories", params={"user_id": user, "session_id": session, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["memories"]


async def _pg(query: str, *args):
    conn = await asyncpg.connect(os.environ["MEMSERVE_PG_DSN"])
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def pg(query: str, *args):
    return asyncio.run(_pg(query, *args))


def test_readyz_reports_the_llm_backends(llm_service):
    running, _ = llm_service
    with running.client() as c:
        llm = c.get("/readyz").json()["checks"]["ingest_worker"]["llm"]
    assert llm["mode"] == "llm"
    assert [b["backend"] for b in llm["backends"]] == ["double"]


def test_facts_with_provenance_topic_summaries_and_a_session_summary(llm_service):
    running, _ = llm_service
    user, sid, msgs = "llm-facts", "s1", messages("a", 24)
    with running.client() as c:
        add(c, user, sid, msgs)
        worker().summarize.remote(user, sid).result()
        st = wait_for(
            c, user, sid, lambda s: s["messages"]["processed"] == 24 and s["summary"] is not None
        )
        assert "Alice" in st["summary"] and st["tokens"]["llm_calls"] >= 2
        mems = memories(c, user, sid)
        facts = [m for m in mems if m["kind"] == "fact"]
        # The double states one fact per message, citing it: each message cited exactly once.
        assert sorted(i for m in facts for i in m["source_message_ids"]) == sorted(
            m["message_id"] for m in msgs
        )
        by_id = {m["message_id"]: m for m in msgs}
        for m in facts:
            [mid] = m["source_message_ids"]
            assert m["memory"].startswith(by_id[mid]["name"])
            assert m["speaker"] == by_id[mid]["name"]
            assert m["metadata"]["llm_backend"] == "double" and m["metadata"]["entities"]
        assert [m for m in mems if m["kind"] == "summary"]  # topic summaries, searchable
        assert {m["kind"] for m in mems} == {"fact", "summary"}

        target = facts[len(facts) // 2]
        r = c.post("/v1/search", json={"user_id": user, "query": target["memory"], "limit": 5})
        assert target["id"] in [m["id"] for m in r.json()["results"]]
    [usage] = pg("SELECT * FROM llm_usage WHERE backend='double'")
    assert usage["calls"] >= st["tokens"]["llm_calls"] and usage["prompt_tokens"] > 0


def test_killing_the_llm_mid_ingestion_loses_nothing_and_duplicates_nothing(llm_service):
    running, double = llm_service
    user, sid, msgs = "llm-kill", "s1", messages("k", 30)
    try:
        _kill_and_revive(running, double, user, sid, msgs)
    finally:
        double.start()  # whatever happened, the next test has its LLM


def _kill_and_revive(running, double, user, sid, msgs) -> None:
    with running.client() as c:
        add(c, user, sid, msgs[:12])
        double.stop()  # the LLM dies while the session is being ingested
        add(c, user, sid, msgs[12:])
        worker().summarize.remote(user, sid).result()
        # The worker reads everything into its buffers; flushed buffers wait in PostgreSQL.
        deadline = time.monotonic() + 60
        while True:
            rows = pg(
                "SELECT status, count(*) AS n FROM messages WHERE user_id=$1 GROUP BY status",
                user,
            )
            by = {r["status"]: r["n"] for r in rows}
            flush_done = not pg("SELECT 1 FROM flush_requests WHERE user_id=$1", user)
            if by == {"buffered": 30} and flush_done:
                break
            assert "failed" not in by and time.monotonic() < deadline, by
            time.sleep(0.3)
        tasks = pg("SELECT * FROM llm_tasks WHERE user_id=$1 AND kind='extract'", user)
        assert tasks and all(t["status"] == "pending" for t in tasks)
        deadline = time.monotonic() + 30
        while not all(t["last_error"] for t in tasks):
            assert time.monotonic() < deadline, tasks
            time.sleep(0.3)
            tasks = pg("SELECT * FROM llm_tasks WHERE user_id=$1 AND kind='extract'", user)
        # Connection refused, or the open circuit breaker that stops calls to a dead backend.
        assert all("LLMUnavailable" in t["last_error"] for t in tasks), tasks
        st = session_status(c, user, sid)
        assert st["messages"]["failed"] == 0 and st["messages"]["processed"] == 0
        assert st["summary"] is None

        double.start()  # back on the same port
        st = wait_for(
            c,
            user,
            sid,
            lambda s: s["messages"]["processed"] == 30 and s["summary"] is not None,
            timeout_s=240,  # tasks retry on their own backoff, up to a few tens of seconds
        )
        facts = [m for m in memories(c, user, sid) if m["kind"] == "fact"]
        assert sorted(i for m in facts for i in m["source_message_ids"]) == sorted(
            m["message_id"] for m in msgs
        )
    assert pg("SELECT * FROM llm_tasks WHERE user_id=$1", user) == []
    # Failed attempts are accounted as calls too.
    [s] = pg("SELECT llm_calls FROM sessions WHERE user_id=$1", user)
    assert s["llm_calls"] > len(tasks) + 1


def test_unusable_output_is_kept_as_failed_and_retried_on_request(llm_service):
    running, double = llm_service
    user, sid, msgs = "llm-invalid", "s1", messages("x", 6)
    double.bad_replies = 2  # the first try and the repair
    with running.client() as c:
        add(c, user, sid, msgs)
        worker().flush.remote(user, sid).result()
        st = wait_for(c, user, sid, lambda s: s["messages"]["failed"] == 6)
        assert st["messages"]["processed"] == 0
        [task] = pg("SELECT * FROM llm_tasks WHERE user_id=$1", user)
        assert task["status"] == "failed" and "LLMOutputInvalid" in task["last_error"]
        errors = pg("SELECT DISTINCT last_error FROM messages WHERE user_id=$1", user)
        assert all("LLMOutputInvalid" in r["last_error"] for r in errors)

        assert worker().retry_failed.remote(user, sid).result() == {"tasks": 1, "messages": 6}
        wait_for(c, user, sid, lambda s: s["messages"]["processed"] == 6)
        assert len([m for m in memories(c, user, sid) if m["kind"] == "fact"]) == 6
