"""Hybrid search with each switchable fast-path lever on or off, in one run on one machine.

One data directory is filled once (`--fill` memories of one user); the service is then started
on it once per variant, and hybrid search runs at 1 and 8 closed-loop clients (query cache off)
while every process's CPU time is read, so each row also says where the CPU of one search went.
The default Ray Serve app's empty endpoint is measured first, in the same run. Variants:

- `memserve`: the shipped settings (`configs/local.yaml`, the cluster's fast-path switches);
- `access_log`: Serve's per-request access log line on every group (shipped: off);
- `exact_queries`: queries embedded by the exact ONNX graph (`MEMSERVE_QUERY_ENCODER=onnx`;
  shipped: its int8-quantized graph);
- `engine_vectors`: every vector search by Qdrant Edge's engine (`MEMSERVE_VECTOR_CACHE_POINTS=0`;
  shipped: a searched user's vectors as a numpy matrix, serve_app/storage/user_vectors.py);
- `separate_loops`: replicas without `RAY_SERVE_THROUGHPUT_OPTIMIZED` (the profile's `one_loop`
  off): Serve's request handling, its handle router and the replica's code each on their own
  thread and loop (shipped: one loop per replica);
- `haproxy_metrics_off`: `RAY_SERVE_HAPROXY_METRICS_ENABLED=0`: HAProxy logs no line per request
  for its manager actor to parse, and the ingress replicas record Serve's request metrics
  themselves (shipped: on, Ray's default).

    python -m benchmarks.search_levers            # 5,000 memories; 150 / 400 requests per cell

Prints JSON, writes benchmarks/results/search_levers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import (
    LOCAL_CONFIG,
    machine_info,
    relpath,
    run_load,
    running_service,
    write_result,
)
from benchmarks.fast_path import floor
from benchmarks.search_latency import fill
from benchmarks.synthetic import questions

VARIANTS = (
    "memserve",
    "access_log",
    "exact_queries",
    "engine_vectors",
    "separate_loops",
    "haproxy_metrics_off",
)
USER = "levers-fill"

ENV: dict[str, dict[str, str]] = {
    "exact_queries": {"MEMSERVE_QUERY_ENCODER": "onnx"},
    "engine_vectors": {"MEMSERVE_VECTOR_CACHE_POINTS": "0"},
    "haproxy_metrics_off": {"RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"},
}


def variant_config(name: str, out_dir: Path, base: Path = LOCAL_CONFIG) -> Path:
    """The Serve config a variant runs: the shipped one, or a copy with the access log on
    (`access_log`) or without the one-loop environment (`separate_loops`) in every deployment."""
    if name not in ("access_log", "separate_loops"):
        return base
    config = yaml.safe_load(base.read_text())
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if name == "access_log":
                deployment["logging_config"] = {"enable_access_log": True}
            else:
                deployment.get("ray_actor_options", {}).pop("runtime_env", None)
    out = out_dir / f"{base.stem}-{name}.yaml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _label(cmdline: list[str], name: str) -> str:
    """Which part of the service a process is: a Ray actor's name, `postgres`, `client`."""
    head = cmdline[0] if cmdline else name
    if head.startswith("ray::"):
        # ServeReplica:<application>:<deployment> -> the deployment
        return head.split(".")[0].removeprefix("ray::").rpartition(":")[2]
    if name.startswith("postgres") or "postgres" in head:
        return "postgres"
    return "other"


def cpu_snapshot(client_pid: int) -> dict[int, tuple[str, float]]:
    """pid -> (label, CPU seconds so far) of every process on the machine."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            t = proc.cpu_times()
            label = (
                "client"
                if proc.pid == client_pid
                else _label(proc.info["cmdline"] or [], proc.info["name"] or "")
            )
            out[proc.pid] = (label, t.user + t.system)
        except psutil.Error:
            continue
    return out


def cpu_per_request(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], requests: int
) -> dict[str, float]:
    """CPU milliseconds per request by label, largest first (processes born meanwhile count
    from zero; labels under 0.05 ms are left out)."""
    per: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        used = seconds - before.get(pid, (label, 0.0))[1]
        if used > 0:
            per[label] = per.get(label, 0.0) + used * 1000 / requests
    return {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def search_cells(url: str, qs: Sequence[str], clients: Sequence[int], requests: dict[int, int]):
    rows = []
    for k, n in enumerate(clients):
        offset = k * 1000

        def make(i: int, offset: int = offset):
            q = qs[(offset + i) % len(qs)]
            return (
                "POST",
                "/v1/search",
                {"user_id": USER, "query": q, "limit": 10, "strategy": "hybrid"},
            )

        warmup = 2 * n + 4
        before = cpu_snapshot(os.getpid())
        res = asyncio.run(run_load(url, make, concurrency=n, requests=requests[n], warmup=warmup))
        after = cpu_snapshot(os.getpid())
        rows.append(
            {
                **res.summary(),
                "cpu_ms_per_request": cpu_per_request(before, after, requests[n] + warmup),
            }
        )
    return rows


def ratios(result: dict) -> dict[str, float]:
    base = {r["concurrency"]: r for r in result["floor"]}
    out = {}
    for row in result["search"]:
        c, v = row["concurrency"], row["variant"]
        out[f"{v}_c{c}_rps_vs_default_floor"] = round(
            row["throughput_rps"] / base[c]["throughput_rps"], 2
        )
        out[f"{v}_c{c}_p95_vs_default_floor"] = round(
            row["latency_ms"]["p95"] / base[c]["latency_ms"]["p95"], 2
        )
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fill", type=int, default=5000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--requests-1", type=int, default=150, help="requests at 1 client")
    p.add_argument("--requests-8", type=int, default=400, help="requests at 8 clients")
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    clients, requests = (1, 8), {1: args.requests_1, 8: args.requests_8}
    result: dict[str, Any] = {
        "benchmark": "search_levers",
        "machine": machine_info(),
        "fill": args.fill,
        "floor": floor("default", clients, max(requests.values())),
        "search": [],
    }
    work = Path(tempfile.mkdtemp(prefix="memserve-levers-"))
    qs = questions(4000)
    try:
        data = work / "data"
        for k, name in enumerate(variants):
            config = variant_config(name, work)
            env = {"MEMSERVE_QUERY_CACHE_SIZE": "0", **ENV.get(name, {})}
            with running_service(config=config, env=env, data_dir=data) as svc:
                if k == 0:
                    asyncio.run(fill(svc.url, USER, 0, args.fill, parallel=1))
                for row in search_cells(svc.url, qs, clients, requests):
                    row = {"variant": name, **row}
                    print(json.dumps(row), flush=True)
                    result["search"].append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["ratios"] = ratios(result)
    result["json"] = relpath(write_result("search_levers", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
