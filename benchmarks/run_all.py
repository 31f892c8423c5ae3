"""Run every benchmark, write JSON + PNG plots and a markdown summary.

    python -m benchmarks.run_all            # quick (`make bench`): < 10 min on 2 quiet cores
                                            # (LoCoMo: first conversation; search: 500)
    python -m benchmarks.run_all --full     # full sizes (50k memories, 100 users x 1k, ...)
    python -m benchmarks.run_all --smoke    # tiny, for CI: checks the scripts run, times nothing

One service (configs/local.yaml on a private Ray cluster, fresh data directory, embedded
PostgreSQL unless --pg-admin-dsn) serves the HTTP benchmarks in turn: ingestion, search
latency, batching (live reconfiguration), LoCoMo retrieval. Then, in process: the LoCoMo
baselines on raw turns, the token economy (re-run with --full, else plotted from its JSON), the
plots and benchmarks/results/summary.md. Results go to benchmarks/results/ (smoke: a temporary
directory unless --out-dir).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import batching, ingestion, plots, search_latency
from benchmarks.common import RESULTS_DIR, ROOT, machine_info, relpath, running_service

LOCOMO_DATA = ROOT.parent / "shared" / "data" / "locomo-dev"


def _step(report: dict, name: str, fn: Callable[[], Any]) -> Any:
    """Run one benchmark; a failure is recorded and the others still run."""
    t0 = time.perf_counter()
    print(f"\n=== {name}", flush=True)
    try:
        out = fn()
        report["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1)}
        return out
    except Exception as e:  # noqa: BLE001 - reported, and the run exits non-zero
        traceback.print_exc()
        report["steps"][name] = {
            "ok": False,
            "seconds": round(time.perf_counter() - t0, 1),
            "error": f"{type(e).__name__}: {e}"[:2000],
        }
        return None


# LoCoMo conversations per mode: ingesting all five through HTTP alone takes ~5 min here.
LOCOMO_CONVERSATIONS = {"smoke": 1, "quick": 1, "full": None}


def _first_conversations(data: Path, n: int) -> Path:
    """A directory holding only the first `n` LoCoMo conversations."""
    sub = Path(tempfile.mkdtemp(prefix="memserve-bench-locomo-"))
    for f in sorted(data.glob("*.json"))[:n]:
        (sub / f.name).symlink_to(f.resolve())
    return sub


def _locomo_http(svc, data: Path, out: Path, mode: str) -> dict:
    from benchmarks import locomo_retrieval

    argv = ["--data", str(data), "--url", svc.url, "--out", str(out),
            "--user-prefix", f"locomo-{uuid.uuid4().hex[:6]}-"]  # fmt: skip
    strategies = "hybrid" if mode == "smoke" else "hybrid,embedding,bm25"
    argv += ["--strategies", strategies]
    return locomo_retrieval.main(argv)


def _locomo_offline(data: Path, out: Path, mode: str) -> dict:
    from benchmarks import locomo_offline

    argv = ["--data", str(data), "--out", str(out)]
    if mode != "full":
        argv += ["--only", *plots.OFFLINE_BASELINES]
    locomo_offline.main(argv)
    return json.loads(out.read_text())


def _token_economy(out_dir: Path, data: Path, mode: str) -> dict:
    path = out_dir / "token_economy.json"
    if mode == "full":
        from benchmarks import token_economy

        token_economy.main(["--data", str(data), "--out", str(path)])
    elif not path.exists():
        path = RESULTS_DIR / "token_economy.json"
    if not path.exists():
        raise FileNotFoundError("no token_economy.json: run `python -m benchmarks.token_economy`")
    te = json.loads(path.read_text())
    return {
        **plots.token_economy_summary(te),
        "source": relpath(path),
        "plot": relpath(plots.plot_token_economy(te, out_dir)),
    }


def summary_markdown(results: dict) -> str:
    """The README's results section, filled from this run."""
    m = results["machine"]
    lines = [
        f"Measured by `{results['command']}` on {m['cpus']} CPUs ({m['platform']}, torch "
        f"{m['torch']}), load average at start {m['loadavg_at_start']}.",
        "",
    ]
    ing = results.get("ingestion")
    if ing:
        lim = ing["encode_limit"]
        lines += [
            "**Ingestion** (`python -m benchmarks.ingestion`): messages/s from `POST /v1/memories`"
            " until searchable, LLM-free, vs MiniLM encode in process at its best batch size "
            f"({lim['texts_per_s']:.0f} texts/s at batch {lim['batch_size']}, 2 torch threads).",
            "",
            "| concurrent sessions | messages | msgs/s | share of encode limit |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['sessions']} | {r['messages']} | {r['messages_per_s']:.0f} | "
            f"{r['ratio_to_limit']:.0%} |"
            for r in ing["levels"]
        ]
        lines += ["", f"![ingestion]({ing['plot']})", ""]
    se = results.get("search_latency")
    if se:
        t = se["target"]
        lines += [
            "**Search** (`python -m benchmarks.search_latency`): POST /v1/search, limit 10, "
            "closed loop; in-process baseline = same embed + Qdrant local + BM25 + fusion, "
            "one query at a time.",
            "",
            "| scenario | strategy | clients | p50 ms | p95 ms | p99 ms | req/s | in-process p50 / p95 ms |",  # noqa: E501
            "|---|---|---|---|---|---|---|---|",
        ]
        base = {(r["scenario"], r["strategy"]): r["latency_ms"] for r in se["baseline"]}
        for r in se["http"]:
            b = base.get((r["scenario"], r["strategy"]))
            bl = f"{b['p50']:.1f} / {b['p95']:.1f}" if b and r["concurrency"] == 1 else ""
            lat = r["latency_ms"]
            lines.append(
                f"| {r['scenario']} | {r['strategy']} | {r['concurrency']} | {lat['p50']:.1f} | "
                f"{lat['p95']:.1f} | {lat['p99']:.1f} | {r['throughput_rps']:.0f} | {bl} |"
            )
        cell = f"{t['scenario']}, {t['strategy']}, {t['concurrency']} clients"
        if t["met"] is None:
            verdict = (
                f"Target p95 <= {t['p95_ms']:.0f} ms ({cell}): not in this mode; measured by "
                "`python -m benchmarks.search_latency --sizes 10000 --users 0,0`."
            )
        else:
            verdict = (
                f"Target p95 <= {t['p95_ms']:.0f} ms ({cell}): measured "
                f"{t['measured_p95_ms']} ms, {'met' if t['met'] else 'NOT met'}."
            )
        lines += [
            "",
            f"{verdict} Published, other hardware: Mem0 p50 148 ms / p95 200 ms; Zep 513 / 778 ms.",
            "",
            *[f"![search]({p})" for p in se["plots"]],
            "",
        ]
    ba = results.get("batching")
    if ba:
        emb, comp = ba["in_process"]["embedder"]["best"], ba["in_process"]["compressor"]["best"]
        lines += [
            "**Batching** (`python -m benchmarks.batching`): in process, MiniLM peaks at "
            f"{emb['texts_per_s']:.0f} texts/s (batch {emb['batch_size']}); LLMLingua-2 with "
            f"random small weights at {comp['texts_per_s']:.0f} texts/s (batch "
            f"{comp['batch_size']}). Through Serve, single-text callers against live-reconfigured "
            "`max_batch_size` / `batch_wait_timeout_s`:",
            "",
        ]
        for dep, data in ba.get("serve", {}).items():
            lines += [
                f"| {dep}: wait timeout ms | callers | texts/s | p50 ms |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {r['batch_wait_timeout_s'] * 1000:g} | {r['concurrency']} | "
                f"{r['texts_per_s']:.0f} | {r['latency_ms']['p50']:.1f} |"
                for r in data["by_timeout"]
            ]
            lines.append("")
        lines += [*[f"![batching]({p})" for p in ba["plots"]], ""]
    lo = results.get("locomo")
    if lo:
        lines += [
            "**LoCoMo evidence recall@10** (`python -m benchmarks.locomo_retrieval` through HTTP; "
            "`python -m benchmarks.locomo_offline` for the raw-turn baselines, same run):",
            "",
            "| system | " + " | ".join(plots.CATEGORIES) + " | overall |",
            "|---|" + "---|" * (len(plots.CATEGORIES) + 1),
        ]
        for label, cats in lo["systems"].items():
            vals = [cats.get(c, {}).get("recall@10") for c in [*plots.CATEGORIES, "overall"]]
            lines.append(
                f"| {label} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |"
            )
        lines += ["", *[f"![locomo]({p})" for p in lo["plots"]], ""]
    te = results.get("token_economy")
    if te:
        llm = (
            f", {te['llm_prompt_tokens']} prompt tokens to the LLM (engine double)"
            if "llm_prompt_tokens" in te
            else ""
        )
        weights = " (random compressor weights)" if te["random_compressor_weights"] else ""
        lines += [
            f"**Token economy** (`python -m benchmarks.token_economy`, {te['conversations']} "
            f"conversations): {te['raw_tokens']} raw tokens -> {te['compressed_tokens']} after "
            f"compression{weights}, {te['memory_construction_calls']} memory-construction calls"
            f"{llm}. LightMem (published, 10 conversations, GPT-4o-mini, th=512, r=0.7): 415 "
            "calls, 997.6k tokens; A-MEM 11,754 calls; Mem0 19,070 calls.",
            "",
            f"![token economy]({te['plot']})",
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    g.add_argument("--full", action="store_const", const="full", dest="mode")
    p.set_defaults(mode="quick")
    p.add_argument("--out-dir", type=Path)
    p.add_argument("--pg-admin-dsn")
    p.add_argument("--locomo-data", type=Path, default=LOCOMO_DATA)
    p.add_argument("--locomo-conversations", type=int, help="first N LoCoMo conversations (0: all)")
    p.add_argument(
        "--only", nargs="*", help="steps: ingestion search batching locomo token_economy"
    )
    args = p.parse_args(argv)
    cleanup: list[Path] = []
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="memserve-bench-smoke-"))
        if args.mode == "smoke"
        else RESULTS_DIR
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # The smoke leaves LoCoMo out (minutes, and CI has no data); --only locomo brings it back.
    defaults = ("ingestion", "search", "batching", "token_economy")
    steps = set(args.only or (defaults if args.mode == "smoke" else (*defaults, "locomo")))
    have_locomo = args.locomo_data.is_dir()
    n_conv = (
        LOCOMO_CONVERSATIONS[args.mode]
        if args.locomo_conversations is None
        else args.locomo_conversations
    )
    if have_locomo and n_conv and "locomo" in steps:
        args.locomo_data = _first_conversations(args.locomo_data, n_conv)
        cleanup.append(args.locomo_data)
    command = (
        "python -m benchmarks.run_all"
        + {"quick": "", "smoke": " --smoke", "full": " --full"}[args.mode]
    )
    report: dict[str, Any] = {
        "mode": args.mode,
        "command": command,
        "machine": machine_info(),
        "out_dir": str(out_dir),
        "steps": {},
    }
    sub = ["--mode", args.mode, "--out-dir", str(out_dir)]
    t0 = time.perf_counter()
    locomo_http = out_dir / "locomo_retrieval.json"
    with running_service(pg_admin_dsn=args.pg_admin_dsn) as svc:
        report["service_start_s"] = svc.start_seconds
        if "ingestion" in steps:
            report["ingestion"] = _step(report, "ingestion", lambda: ingestion.main(sub, svc))
        if "search" in steps:
            report["search_latency"] = _step(
                report, "search", lambda: search_latency.main(sub, svc)
            )
        if "batching" in steps:
            report["batching"] = _step(report, "batching", lambda: batching.main(sub, svc))
        if "locomo" in steps and have_locomo:
            _step(
                report,
                "locomo_http",
                lambda: _locomo_http(svc, args.locomo_data, locomo_http, args.mode),
            )
    if "locomo" in steps and have_locomo:
        offline = _step(
            report,
            "locomo_offline",
            lambda: _locomo_offline(args.locomo_data, out_dir / "locomo_offline.json", args.mode),
        )
        http = json.loads(locomo_http.read_text()) if locomo_http.exists() else None
        if http or offline:
            report["locomo"] = {
                "systems": plots.locomo_systems(http, offline),
                "plots": [relpath(x) for x in plots.plot_locomo(http, offline, out_dir)],
            }
    elif "locomo" in steps:
        report["steps"]["locomo"] = {"ok": True, "skipped": f"no data at {args.locomo_data}"}
    if "token_economy" in steps:
        report["token_economy"] = _step(
            report,
            "token_economy",
            lambda: _token_economy(out_dir, args.locomo_data, args.mode),
        )
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "summary.md").write_text(summary_markdown(report) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("mode", "out_dir", "seconds", "steps")}, indent=2))
    failed = [k for k, v in report["steps"].items() if not v["ok"]]
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")
    return report


if __name__ == "__main__":
    main()
