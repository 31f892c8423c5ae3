"""Search latency and throughput over HTTP, next to an in-process baseline doing the same work.

Scenarios: one user holding 1k / 10k / 50k memories (filled incrementally), and many users
holding 1k each. For each scenario, strategy (embedding, bm25, hybrid) and number of concurrent
clients (1, 8, 32): p50/p95/p99 latency and requests/s of POST /v1/search (limit 10), closed loop.

The baseline runs after the HTTP runs, in this process (the service stopped, or idle when
run_all shares it), on the same data: the query embedded with MiniLM (torch, batch of one),
vector search on a copy of the service's own Qdrant Edge shard, BM25
(serve_app.retrieval.bm25.BM25Index, same backend, same documents) over the entries read from
PostgreSQL, and the same fusion (without the rerank signals). What serving adds is the
difference: HTTP, the ingress, one Ray handle call, and hydrating the results from PostgreSQL.

    python -m benchmarks.search_latency          # quick: 500, 5 users x 100
    python -m benchmarks.search_latency --sizes 10000 --users 0,0   # one user, 10k memories
    python -m benchmarks.search_latency --full   # 1k, 10k, 50k, 100 users x 1k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    RunningService,
    add_service_args,
    auth_headers,
    load_minilm,
    machine_info,
    percentiles,
    plt,
    relpath,
    run_load,
    save_figure,
    use_service,
    wait_processed,
    write_result,
)
from benchmarks.synthetic import chunks, questions, session_messages
from serve_app.settings import Settings

STRATEGIES = ("embedding", "bm25", "hybrid")
LIMIT = 10
TARGET = {"scenario": "1 user x 10000", "strategy": "hybrid", "concurrency": 8, "p95_ms": 80.0}
SESSION_SIZE = 500  # messages per session (and per fill request)
MODES: dict[str, dict[str, Any]] = {
    "smoke": {
        "sizes": (120,),
        "users": (3, 40),
        "concurrency": (1, 4),
        "requests": 12,
        "baseline_requests": 12,
    },
    # Quick fits `make bench` in 10 min: filling goes at ~15 messages/s on 2 cores (embedding
    # bound), so the 10k target cell is its own run: --sizes 10000 --users 0,0.
    "quick": {
        "sizes": (500,),
        "users": (5, 100),
        "concurrency": (1, 8, 32),
        "requests": 60,
        "baseline_requests": 100,
    },
    "full": {
        "sizes": (1000, 10000, 50000),
        "users": (100, 1000),
        "concurrency": (1, 8, 32),
        "requests": 400,
        "baseline_requests": 300,
    },
}


@dataclass
class Scenario:
    name: str
    users: list[str]
    memories_per_user: int
    http: list[dict] = field(default_factory=list)
    vectors_copy: Path | None = None
    docs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # user -> (id, text)


async def fill(url: str, user: str, start_session: int, n_messages: int, parallel: int = 4) -> int:
    """Add `n_messages` to `user` in new sessions of up to SESSION_SIZE, numbered from
    `start_session`, and wait until all are indexed. Returns the next free session number."""
    sessions = []
    for k in range(start_session, start_session + (n_messages + SESSION_SIZE - 1) // SESSION_SIZE):
        size = min(SESSION_SIZE, n_messages - (k - start_session) * SESSION_SIZE)
        sessions.append((f"s{k}", session_messages(f"{user}-s{k}", size, k)))
    sem = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=url, timeout=900, headers=auth_headers()) as client:

        async def post(sid: str, msgs: list) -> None:
            async with sem:
                for part in chunks(msgs, 1000):
                    r = await client.post(
                        "/v1/memories",
                        json={
                            "user_id": user,
                            "session_id": sid,
                            "messages": [m.to_api() for m in part],
                            "flush": True,
                            "wait": True,
                        },
                    )
                    r.raise_for_status()

        await asyncio.gather(*(post(sid, msgs) for sid, msgs in sessions))
        # `wait` gives up after the service's wait timeout: poll until every session is done.
        await wait_processed(client, [(user, sid) for sid, _ in sessions], poll_s=0.2)
    return start_session + len(sessions)


async def fill_many(url: str, users: list[str], n_each: int, parallel: int = 4) -> None:
    sem = asyncio.Semaphore(parallel)

    async def one(u: str) -> None:
        async with sem:
            await fill(url, u, 0, n_each, parallel=1)

    await asyncio.gather(*(one(u) for u in users))


async def read_docs(dsn: str, users: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    from serve_app.retrieval.bm25 import bm25_text
    from serve_app.storage.postgres import Repository, create_pool

    pool = await create_pool(dsn, 1, 2)
    try:
        repo = Repository(pool)
        # The documents MemoryIndex's BM25 indexes (same rows, same text function).
        return {
            u: [(r["id"], bm25_text(r["text"], r["index_text"])) for r in await repo.index_docs(u)]
            for u in users
        }
    finally:
        await pool.close()


def snapshot_vectors(data_dir: Path) -> Path:
    """Copy the service's embedded vector store (its shards are open in the MemoryIndex
    replica; nothing writes to them between requests once ingestion is done)."""
    dst = Path(tempfile.mkdtemp(prefix="memserve-bench-vectors-")) / "vectors"
    shutil.copytree(Settings(data_dir=data_dir).edge_path, dst)
    return dst


def http_runs(url: str, scenario: Scenario, cfg: dict, qs: list[str]) -> list[dict]:
    rows = []
    rng = random.Random(0)
    for strategy in STRATEGIES:
        for conc in cfg["concurrency"]:
            picks = [rng.choice(scenario.users) for _ in range(cfg["requests"] + 4 * conc + 8)]

            def make(i: int, strategy: str = strategy, picks: list[str] = picks):
                body = {
                    "user_id": picks[i % len(picks)],
                    "query": qs[i % len(qs)],
                    "limit": LIMIT,
                    "strategy": strategy,
                }
                return "POST", "/v1/search", body

            res = asyncio.run(
                run_load(url, make, concurrency=conc, requests=cfg["requests"], warmup=2 * conc + 4)
            )
            row = {"scenario": scenario.name, "strategy": strategy, **res.summary()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


async def baseline(scenario: Scenario, embedder, qs: list[str], n: int) -> list[dict]:
    """The same search work in this process, one query at a time."""
    from serve_app.retrieval.bm25 import BM25Index
    from serve_app.retrieval.fusion import fuse
    from serve_app.storage.edge_vectors import EdgeVectorStore

    s = Settings()
    depth = max(LIMIT, s.retrieval_candidates)
    # The service's one shard (generation 0: no index generation was built).
    [base] = [p.name for p in scenario.vectors_copy.iterdir() if p.is_dir()]
    store = EdgeVectorStore(scenario.vectors_copy, base, embedder.dim)
    indexes = {}
    for user, docs in scenario.docs.items():
        idx = BM25Index(s.bm25_backend)
        idx.rebuild(docs)
        indexes[user] = idx
    rng = random.Random(1)
    rows = []
    try:
        for strategy in STRATEGIES:
            lat = []
            for i in range(n + 5):
                user, q = rng.choice(scenario.users), qs[i % len(qs)]
                t0 = time.perf_counter()
                vec = lex = None
                if strategy in ("embedding", "hybrid"):
                    v = embedder.encode([q])[0]
                    vec = await store.search(user, v, depth)
                if strategy in ("bm25", "hybrid"):
                    lex = indexes[user].search(q, depth)
                if strategy == "hybrid":
                    ranked = fuse(
                        [vec, lex], method=s.fusion_method, weights=s.fusion_weights,
                        k=s.fusion_rrf_k,
                    )  # fmt: skip
                else:
                    ranked = vec if vec is not None else lex
                assert ranked is not None
                _ = ranked[:LIMIT]
                if i >= 5:  # the first few warm caches
                    lat.append((time.perf_counter() - t0) * 1000)
            pct = percentiles(lat)
            rows.append(
                {
                    "scenario": scenario.name,
                    "strategy": strategy,
                    "concurrency": 1,
                    "requests": len(lat),
                    "throughput_rps": round(1000 / pct["mean"], 1) if pct["mean"] else 0.0,
                    "latency_ms": pct,
                }
            )
            print(json.dumps({"baseline": True, **rows[-1]}), flush=True)
    finally:
        await store.close()
    return rows


def plot(result: dict, out_dir: Path) -> list[Path]:
    pyplot = plt()
    paths = []
    scenarios = list(dict.fromkeys(r["scenario"] for r in result["http"]))
    colors = dict(zip(scenarios, pyplot.cm.tab10.colors, strict=False))
    for metric, ylabel, name in (
        ("p95", "p95 latency (ms)", "search_latency"),
        ("throughput_rps", "requests/s", "search_throughput"),
    ):
        fig, axes = pyplot.subplots(1, len(STRATEGIES), figsize=(15, 4.2), sharey=True)
        for ax, strategy in zip(axes, STRATEGIES, strict=True):
            for sc in scenarios:
                rows = [
                    r for r in result["http"] if r["scenario"] == sc and r["strategy"] == strategy
                ]
                xs = [r["concurrency"] for r in rows]
                ys = [
                    r["latency_ms"]["p95"] if metric == "p95" else r["throughput_rps"] for r in rows
                ]
                ax.plot(xs, ys, marker="o", color=colors[sc], label=f"HTTP, {sc}")
                base = [
                    r
                    for r in result["baseline"]
                    if r["scenario"] == sc and r["strategy"] == strategy
                ]
                if base:
                    b = base[0]
                    y = b["latency_ms"]["p95"] if metric == "p95" else b["throughput_rps"]
                    ax.scatter([1], [y], marker="x", s=80, color=colors[sc],
                               label=f"in-process, {sc}")  # fmt: skip
            if metric == "p95":
                ax.axhline(TARGET["p95_ms"], color="#C44E52", ls=":", label="80 ms target")
                ax.set_yscale("log")
            ax.set_xscale("log", base=2)
            ax.set_xticks(result["config"]["concurrency"])
            ax.set_xticklabels([str(c) for c in result["config"]["concurrency"]])
            ax.set_title(strategy)
            ax.set_xlabel("concurrent clients")
        axes[0].set_ylabel(ylabel)
        axes[-1].legend(fontsize=7, loc="best")
        paths.append(save_figure(fig, name, out_dir))
    return paths


def target_row(http: list[dict]) -> dict | None:
    for r in http:
        if (
            r["scenario"] == TARGET["scenario"]
            and r["strategy"] == TARGET["strategy"]
            and r["concurrency"] == TARGET["concurrency"]
        ):
            return r
    return None


def main(argv: Sequence[str] | None = None, service: RunningService | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=tuple(MODES), default="quick")
    p.add_argument("--full", action="store_const", const="full", dest="mode")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    p.add_argument("--sizes", help="comma list: memories of the single user (overrides the mode)")
    p.add_argument("--users", help="N,M: N users with M memories each (overrides the mode)")
    p.add_argument("--concurrency", help="comma list (overrides the mode)")
    p.add_argument("--requests", type=int, help="measured requests per cell")
    p.add_argument("--torch-threads", type=int, default=2)
    add_service_args(p)
    args = p.parse_args(argv)
    cfg = dict(MODES[args.mode])
    if args.sizes:
        cfg["sizes"] = tuple(int(x) for x in args.sizes.split(","))
    if args.users:
        cfg["users"] = tuple(int(x) for x in args.users.split(","))
    if args.concurrency:
        cfg["concurrency"] = tuple(int(x) for x in args.concurrency.split(","))
    if args.requests:
        cfg["requests"] = args.requests

    run = uuid.uuid4().hex[:6]
    qs = questions(max(500, cfg["requests"]), seed=7)
    result: dict[str, Any] = {
        "benchmark": "search_latency",
        "mode": args.mode,
        "machine": machine_info(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "limit": LIMIT,
        "fill": [],
    }
    scenarios: list[Scenario] = []
    snapshots: list[Path] = []

    def measure(svc: RunningService, sc: Scenario, added: int, fill_s: float) -> None:
        sc.docs = asyncio.run(read_docs(svc.pg_dsn, sc.users))
        memories = sum(len(d) for d in sc.docs.values())
        result["fill"].append(
            {"scenario": sc.name, "messages_added": added, "seconds": round(fill_s, 1),
             "memories_indexed": memories}
        )  # fmt: skip
        sc.http = http_runs(svc.url, sc, cfg, qs)
        sc.vectors_copy = snapshot_vectors(svc.data_dir)
        snapshots.append(sc.vectors_copy.parent)
        scenarios.append(sc)

    try:
        with use_service(service, args.pg_admin_dsn) as svc:
            result["service_start_s"] = svc.start_seconds
            one = f"search-{run}-one"
            have = next_session = 0
            for size in sorted(cfg["sizes"]):
                t0 = time.perf_counter()
                next_session = asyncio.run(fill(svc.url, one, next_session, size - have))
                sc = Scenario(f"1 user x {size}", [one], size)
                measure(svc, sc, size - have, time.perf_counter() - t0)
                have = size
            n_users, per_user = cfg["users"]
            if n_users:
                users = [f"search-{run}-u{k}" for k in range(n_users)]
                t0 = time.perf_counter()
                asyncio.run(fill_many(svc.url, users, per_user))
                sc = Scenario(f"{n_users} users x {per_user}", users, per_user)
                measure(svc, sc, n_users * per_user, time.perf_counter() - t0)

        embedder = load_minilm(args.torch_threads)
        base_rows = []
        for sc in scenarios:
            base_rows += asyncio.run(baseline(sc, embedder, qs, cfg["baseline_requests"]))
    finally:
        for snap in snapshots:
            shutil.rmtree(snap, ignore_errors=True)

    result["http"] = [r for sc in scenarios for r in sc.http]
    result["baseline"] = base_rows
    hit = target_row(result["http"])
    result["target"] = {
        **TARGET,
        "measured_p95_ms": hit["latency_ms"]["p95"] if hit else None,
        "met": None if hit is None else hit["latency_ms"]["p95"] <= TARGET["p95_ms"],
    }
    result["plots"] = [relpath(x) for x in plot(result, args.out_dir)]
    result["json"] = relpath(write_result("search_latency", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
