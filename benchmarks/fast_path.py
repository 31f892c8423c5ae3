"""The fast data path, measured in one run on one machine, as ratios of what the same run measures.

1. The floor: an empty FastAPI endpoint on a default Ray Serve app (Python proxy, default
   `max_ongoing_requests`), the same with Ray Serve's HAProxy ingress alone, and the same with
   memserve's Serve settings (HAProxy, the ingress's `max_ongoing_requests`), each on a fresh
   private cluster; closed-loop clients.
2. In process, before the service starts: MiniLM `encode` at batch 32 (torch, 2 threads, the
   Embedder group's class) on exactly the texts the worker embeds for the ingestion runs below.
3. memserve (configs/local.yaml, embedded PostgreSQL and vector store): ingestion of
   LoCoMo-shaped synthetic sessions through HTTP at 1 and 16 concurrent sessions, then a fill of
   one user with --fill short messages in requests of 1000; then hybrid, bm25 and embedding
   search of that user at 1, 8 and 32 clients, with the query cache off (the synthetic
   questions repeat; every query is encoded).

    python -m benchmarks.fast_path                  # 10,000 memories, 300 requests per cell
    python -m benchmarks.fast_path --fill 1000 --requests 100 --ingest-messages 128   # quick

Prints JSON, writes benchmarks/results/fast_path.json and fast_path.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from benchmarks.common import (
    add_service_args,
    encode_throughput,
    free_port,
    load_minilm,
    machine_info,
    plt,
    relpath,
    run_load,
    running_service,
    save_figure,
    write_result,
)
from benchmarks.ingestion import index_texts, level_sessions, run_level
from benchmarks.search_latency import SESSION_SIZE, fill
from benchmarks.synthetic import questions, session_messages

STRATEGIES = ("hybrid", "bm25", "embedding")
FLOORS = ("default", "haproxy", "memserve")


def _floor_app(tuned: bool):
    from ray import serve

    app = FastAPI()

    class Empty:
        @app.post("/echo")
        async def echo(self, body: dict) -> dict:
            return {"ok": 1}

    deployment = serve.deployment(serve.ingress(app)(Empty))
    if tuned:
        from serve_app.profiles import PROFILES

        deployment = deployment.options(
            max_ongoing_requests=PROFILES["local"].ingress.max_ongoing_requests
        )
    return deployment.bind()


def floor(kind: str, clients: Sequence[int], requests: int) -> list[dict]:
    """An empty endpoint on a fresh private cluster: `default` (no switches, default options),
    `haproxy` (HAProxy ingress only), `memserve` (memserve's switches and ingress options)."""
    import ray
    from ray import serve

    from deployments.local_cluster import LocalRayCluster, free_port_base

    port = free_port()
    cluster = LocalRayCluster(free_port_base(), 4, fast_path=kind != "default")
    rows = []
    try:
        ray.init(address=cluster.start(), log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(_floor_app(tuned=kind == "memserve"), name="floor", route_prefix="/")
        for n in clients:
            res = asyncio.run(
                run_load(
                    f"http://127.0.0.1:{port}",
                    lambda i: ("POST", "/echo", {"q": "hello"}),
                    concurrency=n,
                    requests=requests,
                    warmup=2 * n + 4,
                    headers={},  # the empty endpoint has no keys
                )
            )
            row = {"floor": kind, **res.summary()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.stop()
    return rows


def fill_texts(user: str, n: int) -> list[str]:
    """The texts the worker embeds for `fill(url, user, 0, n)` (same sessions, same seeds)."""
    sessions = {}
    for k in range((n + SESSION_SIZE - 1) // SESSION_SIZE):
        size = min(SESSION_SIZE, n - k * SESSION_SIZE)
        sessions[f"s{k}"] = session_messages(f"{user}-s{k}", size, k)
    return index_texts(sessions)


def search_runs(url: str, user: str, clients: Sequence[int], requests: int) -> list[dict]:
    rows = []
    per_cell = requests + max(clients) * 2 + 4
    qs = questions(per_cell * len(clients) * len(STRATEGIES))
    used = 0
    for strategy in STRATEGIES:
        for n in clients:
            batch, used = qs[used : used + per_cell], used + per_cell

            def make(i: int, strategy: str = strategy, batch: list[str] = batch):
                body = {"user_id": user, "query": batch[i], "limit": 10, "strategy": strategy}
                return "POST", "/v1/search", body

            res = asyncio.run(
                run_load(url, make, concurrency=n, requests=requests, warmup=2 * n + 4)
            )
            row = {"strategy": strategy, **res.summary()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _cell(rows: list[dict], key: str, value: str, clients: int) -> dict:
    return next(r for r in rows if r[key] == value and r["concurrency"] == clients)


def ratios(result: dict) -> dict[str, Any]:
    floor_rows, search = result["floor"], result["search"]
    out: dict[str, Any] = {}
    for clients in result["clients"]:
        base = _cell(floor_rows, "floor", "default", clients)
        for strategy in STRATEGIES:
            s = _cell(search, "strategy", strategy, clients)
            out[f"{strategy}_c{clients}_rps_vs_default_floor"] = round(
                s["throughput_rps"] / base["throughput_rps"], 2
            )
            out[f"{strategy}_c{clients}_p95_vs_default_floor"] = round(
                s["latency_ms"]["p95"] / base["latency_ms"]["p95"], 2
            )
    one = _cell(search, "strategy", "hybrid", 1)
    out["hybrid_c1_server_took_ms_p50"] = one["server_took_ms"]["p50"]
    limit = result["encode_batch32"]
    for row in result["ingestion"]:
        ref = limit["fill"] if row["kind"] == "fill" else limit["sessions"]
        out[f"ingest_{row['kind']}_vs_encode"] = round(row["messages_per_s"] / ref, 2)
    return out


def plot(result: dict, out_dir: Path) -> Path:
    pyplot = plt()
    fig, (a, b) = pyplot.subplots(1, 2, figsize=(11, 4))
    for kind in FLOORS:
        rows = [r for r in result["floor"] if r["floor"] == kind]
        a.plot(
            [r["concurrency"] for r in rows],
            [r["throughput_rps"] for r in rows],
            "--o",
            label=f"empty endpoint, {kind}",
        )
    for strategy in STRATEGIES:
        rows = [r for r in result["search"] if r["strategy"] == strategy]
        a.plot(
            [r["concurrency"] for r in rows],
            [r["throughput_rps"] for r in rows],
            "-s",
            label=f"memserve {strategy}",
        )
        b.plot(
            [r["concurrency"] for r in rows],
            [r["latency_ms"]["p95"] for r in rows],
            "-s",
            label=f"memserve {strategy}",
        )
    for kind in FLOORS:
        rows = [r for r in result["floor"] if r["floor"] == kind]
        b.plot(
            [r["concurrency"] for r in rows],
            [r["latency_ms"]["p95"] for r in rows],
            "--o",
            label=f"empty, {kind}",
        )
    a.set(xlabel="closed-loop clients", ylabel="requests/s", xscale="log", title="throughput")
    b.set(xlabel="closed-loop clients", ylabel="p95 ms", xscale="log", title="p95 latency")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.suptitle(f"search at {result['fill']} memories, one user, vs an empty Serve endpoint")
    return save_figure(fig, "fast_path", out_dir)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fill", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--ingest-levels", default="1,16")
    p.add_argument("--ingest-messages", type=int, default=512)
    add_service_args(p)
    args = p.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",")]
    levels = [int(x) for x in args.ingest_levels.split(",")]
    run = f"fp{int(time.time())}"
    result: dict[str, Any] = {
        "benchmark": "fast_path",
        "machine": machine_info(),
        "fill": args.fill,
        "clients": clients,
        "floor": [],
    }
    for kind in FLOORS:
        result["floor"] += floor(kind, clients, args.requests)

    sessions = {lv: level_sessions(run, lv, args.ingest_messages) for lv in levels}
    user = f"{run}-fill"
    model = load_minilm(2)
    session_texts = [t for s in sessions.values() for t in index_texts(_by_session(s))]
    result["encode_batch32"] = {
        "sessions": encode_throughput(model.encode, session_texts, [32])[0]["texts_per_s"],
        "fill": encode_throughput(
            model.encode, fill_texts(user, min(args.fill, 2000)), [32], min_seconds=5
        )[0]["texts_per_s"],
    }
    del model
    print(json.dumps({"encode_batch32": result["encode_batch32"]}), flush=True)

    result["ingestion"] = []
    with running_service(
        pg_admin_dsn=args.pg_admin_dsn, env={"MEMSERVE_QUERY_CACHE_SIZE": "0"}
    ) as svc:
        for lv in levels:
            row = {"kind": f"sessions_{lv}", **asyncio.run(run_level(svc.url, sessions[lv], 32))}
            print(json.dumps(row), flush=True)
            result["ingestion"].append(row)
        t0 = time.perf_counter()
        asyncio.run(fill(svc.url, user, 0, args.fill, parallel=1))
        wall = time.perf_counter() - t0
        row = {
            "kind": "fill",
            "messages": args.fill,
            "seconds": round(wall, 1),
            "messages_per_s": round(args.fill / wall, 1),
        }
        print(json.dumps(row), flush=True)
        result["ingestion"].append(row)
        result["search"] = search_runs(svc.url, user, clients, args.requests)
        with svc.client(timeout=30) as c:
            result["memory_index_ready"] = c.get("/readyz").json()["checks"]["memory_index"]
    result["ratios"] = ratios(result)
    result["png"] = relpath(plot(result, args.out_dir))
    result["json"] = relpath(write_result("fast_path", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


def _by_session(sessions: dict[tuple[str, str], list]) -> dict[str, list]:
    return {s: m for (_, s), m in sessions.items()}


if __name__ == "__main__":
    main()
