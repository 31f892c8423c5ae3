"""Ingestion throughput: messages/s from POST /v1/memories until searchable, against the
embedder's raw in-process encode throughput (the physical limit of an LLM-free pipeline).

For each level of concurrency, that many sessions (one user each) post their messages in
requests of --request-size messages; each session's last request has `wait: true`, and the clock
stops when every session reports all its messages processed (GET /v1/sessions). The limit is
measured in the same run, before any load (the service idle or not yet started): MiniLM `encode`
in this process, torch threads = 2, on exactly the texts the worker embeds
(serve_app.pipeline.extractive index texts), at its best batch size.

    python -m benchmarks.ingestion            # quick: 1, 4, 16 sessions, 1024 messages each
    python -m benchmarks.ingestion --full     # 4096 messages per level
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    RunningService,
    add_service_args,
    auth_headers,
    encode_throughput,
    load_minilm,
    machine_info,
    percentiles,
    plt,
    relpath,
    save_figure,
    use_service,
    wait_processed,
    write_result,
)
from benchmarks.synthetic import SyntheticMessage, chunks, session_messages

TARGET_RATIO = 0.7
MODES = {
    "smoke": {"levels": (1, 4), "messages": 48, "request_size": 8, "batch_sizes": (8, 32)},
    "quick": {
        "levels": (1, 4, 16),
        "messages": 256,
        "request_size": 32,
        "batch_sizes": (16, 32, 64, 128, 256),
    },
    "full": {
        "levels": (1, 4, 16),
        "messages": 4096,
        "request_size": 32,
        "batch_sizes": (8, 16, 32, 64, 128, 256, 512),
    },
}


def index_texts(sessions: dict[str, list[SyntheticMessage]]) -> list[str]:
    """What the worker embeds for these messages (same entry unit and text as the service)."""
    from serve_app.model.messages import StoredMessage
    from serve_app.pipeline.extractive import build_entries
    from serve_app.settings import Settings

    unit = Settings().entry_unit
    texts: list[str] = []
    for sid, msgs in sessions.items():
        stored = [
            StoredMessage("u", sid, m.message_id, i, m.role, m.name, m.content, m.ts)
            for i, m in enumerate(msgs)
        ]
        texts += [d.index_text for d in build_entries(stored, None, unit=unit)]
    return texts


def level_sessions(run: str, level: int, total: int) -> dict[tuple[str, str], list]:
    per = max(1, total // level)
    return {
        (f"ing-{run}-c{level}-u{k}", f"s{k}"): session_messages(f"{run}-c{level}-s{k}", per, k)
        for k in range(level)
    }


async def _post_session(
    client: httpx.AsyncClient, user: str, session: str, msgs: list, request_size: int
) -> list[float]:
    latencies = []
    parts = list(chunks(msgs, request_size))
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        t0 = time.perf_counter()
        r = await client.post(
            "/v1/memories",
            json={
                "user_id": user,
                "session_id": session,
                "messages": [m.to_api() for m in part],
                "flush": last,
                "wait": last,
            },
        )
        r.raise_for_status()
        if not last:
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


async def run_level(
    url: str, sessions: dict[tuple[str, str], list], request_size: int, stall_s: float = 180
) -> dict[str, Any]:
    total = sum(len(m) for m in sessions.values())
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=auth_headers()) as client:
        t0 = time.perf_counter()
        lat = await asyncio.gather(
            *(_post_session(client, u, s, m, request_size) for (u, s), m in sessions.items())
        )
        await wait_processed(client, list(sessions), stall_s=stall_s)
        wall = time.perf_counter() - t0
    return {
        "sessions": len(sessions),
        "messages": total,
        "seconds": round(wall, 2),
        "messages_per_s": round(total / wall, 1),
        "post_latency_ms": percentiles([x for part in lat for x in part]),
    }


def plot(result: dict, out_dir: Path) -> Path:
    pyplot = plt()
    fig, (ax1, ax2) = pyplot.subplots(1, 2, figsize=(11, 4))
    levels = result["levels"]
    limit = result["encode_limit"]["texts_per_s"]
    xs = [str(r["sessions"]) for r in levels]
    bars = ax1.bar(xs, [r["messages_per_s"] for r in levels], color="#4C72B0")
    for b, r in zip(bars, levels, strict=True):
        ax1.annotate(
            f"{r['ratio_to_limit']:.0%}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
        )
    ax1.axhline(limit, color="black", ls="--", label=f"encode limit {limit:.0f}/s")
    ax1.axhline(TARGET_RATIO * limit, color="#C44E52", ls=":", label="70% target")
    ax1.set_xlabel("concurrent sessions")
    ax1.set_ylabel("messages/s, POST -> searchable")
    ax1.set_title("End-to-end ingestion (LLM-free)")
    ax1.legend(loc="lower right")
    rows = result["encode_by_batch_size"]
    ax2.plot([r["batch_size"] for r in rows], [r["texts_per_s"] for r in rows], marker="o")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("texts/s")
    ax2.set_title("MiniLM encode in process (torch threads = 2)")
    return save_figure(fig, "ingestion", out_dir)


def main(argv: Sequence[str] | None = None, service: RunningService | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=tuple(MODES), default="quick")
    p.add_argument("--full", action="store_const", const="full", dest="mode")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    p.add_argument("--levels", help="comma list of concurrent sessions (overrides the mode)")
    p.add_argument("--messages", type=int, help="messages per level (overrides the mode)")
    p.add_argument("--request-size", type=int)
    p.add_argument("--torch-threads", type=int, default=2)
    add_service_args(p)
    args = p.parse_args(argv)
    cfg = dict(MODES[args.mode])
    if args.levels:
        cfg["levels"] = tuple(int(x) for x in args.levels.split(","))
    if args.messages:
        cfg["messages"] = args.messages
    if args.request_size:
        cfg["request_size"] = args.request_size

    run = uuid.uuid4().hex[:6]
    plan = {lvl: level_sessions(run, lvl, cfg["messages"]) for lvl in cfg["levels"]}
    result: dict[str, Any] = {
        "benchmark": "ingestion",
        "mode": args.mode,
        "machine": machine_info(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }

    # The physical limit first, while nothing else of ours is busy.
    texts = index_texts({f"{u}/{s}": m for (u, s), m in plan[max(plan)].items()})
    embedder = load_minilm(args.torch_threads)
    rows = encode_throughput(
        embedder.encode, texts, cfg["batch_sizes"], min_seconds=1.0 if args.mode == "smoke" else 3
    )
    best = max(rows, key=lambda r: r["texts_per_s"])
    result["encode_by_batch_size"] = rows
    result["encode_limit"] = {**best, "torch_threads": args.torch_threads}
    del embedder

    with use_service(service, args.pg_admin_dsn) as svc:
        result["service_start_s"] = svc.start_seconds
        warm = {(f"ing-{run}-warm", "s0"): session_messages(f"{run}-warm", 64, 0)}
        asyncio.run(run_level(svc.url, warm, cfg["request_size"]))
        levels = []
        for lvl in cfg["levels"]:
            row = asyncio.run(run_level(svc.url, plan[lvl], cfg["request_size"]))
            row["ratio_to_limit"] = round(row["messages_per_s"] / best["texts_per_s"], 3)
            levels.append(row)
            print(json.dumps(row), flush=True)
    result["levels"] = levels
    result["best_ratio"] = max(r["ratio_to_limit"] for r in levels)
    result["target_ratio"] = TARGET_RATIO
    result["meets_target"] = result["best_ratio"] >= TARGET_RATIO
    result["plot"] = relpath(plot(result, args.out_dir))
    result["json"] = relpath(write_result("ingestion", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
