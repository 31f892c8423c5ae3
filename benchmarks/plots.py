"""Plots from the JSON the LoCoMo and token-economy benchmarks write.

    python -m benchmarks.plots locomo [--retrieval benchmarks/results/locomo_retrieval.json]
                                      [--offline benchmarks/results/locomo_offline.json]
    python -m benchmarks.plots token-economy [--data benchmarks/results/token_economy.json]

LoCoMo: the service over HTTP (benchmarks/locomo_retrieval.py, every strategy it ran) side by
side with the offline baselines on raw turns (benchmarks/locomo_offline.py: BM25, MiniLM, RRF),
per question category. Token economy: per conversation, raw vs compressed tokens (and tokens sent
to the LLM and LLM calls when the JSON has them), next to LightMem's published figures.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, plt, relpath, save_figure

KS = (1, 5, 10, 20)
CATEGORIES = ("multi_hop", "temporal", "open_domain", "single_hop")
SERVICE_STRATEGIES = ("hybrid", "embedding", "bm25")
OFFLINE_BASELINES = {
    "raw_bm25": "raw turns: BM25",
    "raw_minilm": "raw turns: MiniLM",
    "raw_rrf": "raw turns: RRF",
}

# LightMem (Fang et al., 2025), LoCoMo, 10 conversations, GPT-4o-mini backbone, setting
# th=512 (short-term buffer tokens), r=0.7 (compression rate): memory-construction totals.
LIGHTMEM_PUBLISHED = {
    "conversations": 10,
    "source": "LightMem paper, LoCoMo with GPT-4o-mini (th=512, r=0.7)",
    "systems": {
        "LightMem": {"calls": 415, "tokens": 997_600},
        "A-MEM": {"calls": 11_754, "tokens": None},
        "Mem0": {"calls": 19_070, "tokens": None},
    },
}


# --- LoCoMo ------------------------------------------------------------------------------------


def locomo_systems(retrieval: dict | None, offline: dict | None) -> dict[str, dict[str, dict]]:
    """label -> {category or "overall" -> {"recall@k": value}} from both JSON shapes."""
    systems: dict[str, dict[str, dict]] = {}
    if retrieval:
        for strategy in SERVICE_STRATEGIES:
            block = retrieval.get(strategy)
            if not block:
                continue
            cats = {c: block["by_category"][c] for c in CATEGORIES if c in block["by_category"]}
            overall = {f"recall@{k}": block[f"recall@{k}"] for k in KS if f"recall@{k}" in block}
            systems[f"service ({strategy}, HTTP)"] = {**cats, "overall": overall}
    if offline:
        variants = offline.get("variants", {})
        for name, label in OFFLINE_BASELINES.items():
            v = variants.get(name)
            if not v:
                continue
            cats = {key.split("_", 1)[1]: val for key, val in v["per_category"].items()}
            systems[label] = {
                **{c: cats[c] for c in CATEGORIES if c in cats},
                "overall": v["overall"],
            }
    return systems


def plot_locomo(
    retrieval: dict | None, offline: dict | None, out_dir: Path | None = None, k: int = 10
) -> list[Path]:
    """Two figures: recall@k bars per category, and recall@1..20 curves per category."""
    systems = locomo_systems(retrieval, offline)
    if not systems:
        raise ValueError("no LoCoMo results to plot")
    pyplot = plt()
    groups = [*CATEGORIES, "overall"]
    labels = list(systems)
    colors = dict(zip(labels, pyplot.cm.tab10.colors, strict=False))
    width = 0.8 / len(labels)
    fig, ax = pyplot.subplots(figsize=(11, 4.5))
    for i, label in enumerate(labels):
        xs = [g + (i - (len(labels) - 1) / 2) * width for g in range(len(groups))]
        ys = [systems[label].get(g, {}).get(f"recall@{k}", 0.0) for g in groups]
        bars = ax.bar(xs, ys, width, label=label, color=colors[label])
        for b, y in zip(bars, ys, strict=True):
            ax.annotate(f"{y:.2f}", (b.get_x() + b.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=6)  # fmt: skip
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("_", " ") for g in groups])
    ax.set_ylabel(f"evidence recall@{k}")
    ax.set_ylim(0, 1)
    ax.set_title(f"LoCoMo evidence recall@{k} by question category")
    ax.legend(fontsize=8, ncol=2)
    paths = [save_figure(fig, f"locomo_recall_at_{k}_by_category", out_dir)]

    fig, axes = pyplot.subplots(1, len(groups), figsize=(18, 3.8), sharey=True)
    for ax, g in zip(axes, groups, strict=True):
        for label in labels:
            block = systems[label].get(g)
            if not block:
                continue
            ax.plot(KS, [block.get(f"recall@{kk}", 0.0) for kk in KS], marker="o",
                    label=label, color=colors[label])  # fmt: skip
        ax.set_title(g.replace("_", " "))
        ax.set_xticks(KS)
        ax.set_xlabel("k")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("evidence recall@k")
    axes[-1].legend(fontsize=7, loc="lower right")
    paths.append(save_figure(fig, "locomo_recall_curves_by_category", out_dir))
    return paths


# --- token economy -----------------------------------------------------------------------------


SCOPE = "compression_on_stream"  # LightMem's setting: compression on, one buffer per conversation


def _llm(row: dict) -> dict | None:
    """The LLM accounting (engine double) of one conversation, if the JSON has it."""
    return row.get(SCOPE, {}).get("llm") or None


def plot_token_economy(data: dict, out_dir: Path | None = None) -> Path:
    rows = data["conversations"]
    pyplot = plt()
    fig, (ax1, ax2, ax3) = pyplot.subplots(
        1, 3, figsize=(17, 4.5), gridspec_kw={"width_ratios": [2.2, 1, 1]}
    )
    names = [r["conversation"] for r in rows]
    series = [("raw", [r["tokens_in"] for r in rows]),
              ("after compression", [r["tokens_out"] for r in rows])]  # fmt: skip
    if all(_llm(r) for r in rows):
        series.append(("sent to the LLM (prompt)", [_llm(r)["prompt_tokens"] for r in rows]))
    width = 0.8 / len(series)
    for i, (label, ys) in enumerate(series):
        xs = [n + (i - (len(series) - 1) / 2) * width for n in range(len(rows))]
        ax1.bar(xs, ys, width, label=label)
    ax1.set_xticks(range(len(rows)))
    ax1.set_xticklabels(names, rotation=30, fontsize=8)
    ax1.set_ylabel("tokens (cl100k)")
    model = "random-weight LLMLingua-2" if data.get("random_model") else "LLMLingua-2"
    ax1.set_title(f"Tokens per conversation ({model}, rate {data.get('rate')})", fontsize=10)
    ax1.legend(fontsize=8)

    # Memory-construction calls per conversation: ours (one per flush) vs published / 10.
    n_pub = LIGHTMEM_PUBLISHED["conversations"]
    measured = all(_llm(r) for r in rows)
    ours_calls = [(_llm(r) or {}).get("calls", r[SCOPE]["flushes"]) for r in rows]
    ours = "memserve, this run" if measured else "memserve flushes, this run"
    color = {ours: "#4C72B0", "LightMem": "#55A868", "A-MEM": "#C44E52", "Mem0": "#8172B2"}
    labels = [ours, *LIGHTMEM_PUBLISHED["systems"]]
    calls = [sum(ours_calls) / len(rows)] + [
        s["calls"] / n_pub for s in LIGHTMEM_PUBLISHED["systems"].values()
    ]
    bars = ax2.bar(labels, calls, color=[color[x] for x in labels])
    for b, y in zip(bars, calls, strict=True):
        ax2.annotate(f"{y:.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom")
    ax2.set_yscale("log")
    ax2.set_ylabel("LLM calls per conversation")
    ax2.set_title("Memory-construction calls\n(published: totals / 10 conversations)", fontsize=10)
    ax2.tick_params(axis="x", labelsize=8, rotation=20)

    # Ours: prompt tokens exactly as built by the pipeline (the engine double's replies are a
    # floor for completions, so they are left out); published: input + output.
    tok_labels, toks = [], []
    if measured:
        tok_labels.append(ours)
        toks.append(sum(_llm(r)["prompt_tokens"] for r in rows) / len(rows))
    for name, s in LIGHTMEM_PUBLISHED["systems"].items():
        if s["tokens"]:
            tok_labels.append(name)
            toks.append(s["tokens"] / n_pub)
    bars = ax3.bar(tok_labels, toks, color=[color[x] for x in tok_labels])
    for b, y in zip(bars, toks, strict=True):
        ax3.annotate(f"{y / 1000:.1f}k", (b.get_x() + b.get_width() / 2, y), ha="center",
                     va="bottom")  # fmt: skip
    ax3.set_ylabel("LLM tokens per conversation")
    ax3.set_title("Memory-construction tokens\n(ours: prompt only; published: in + out)",
                  fontsize=10)  # fmt: skip
    ax3.tick_params(axis="x", labelsize=8, rotation=20)
    return save_figure(fig, "token_economy", out_dir)


def token_economy_summary(data: dict) -> dict[str, Any]:
    rows = data["conversations"]
    out: dict[str, Any] = {
        "conversations": len(rows),
        "raw_tokens": sum(r["tokens_in"] for r in rows),
        "compressed_tokens": sum(r["tokens_out"] for r in rows),
        "memory_construction_calls": sum(
            (_llm(r) or {}).get("calls", r[SCOPE]["flushes"]) for r in rows
        ),
        "random_compressor_weights": bool(data.get("random_model")),
        "published": LIGHTMEM_PUBLISHED,
    }
    if all(_llm(r) for r in rows):
        out["llm_prompt_tokens"] = sum(_llm(r)["prompt_tokens"] for r in rows)
        out["llm_completion_tokens"] = sum(_llm(r)["completion_tokens"] for r in rows)
    return out


def _load(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path and path.exists() else None


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    lo = sub.add_parser("locomo")
    lo.add_argument("--retrieval", type=Path, default=RESULTS_DIR / "locomo_retrieval.json")
    lo.add_argument("--offline", type=Path, default=RESULTS_DIR / "locomo_offline.json")
    lo.add_argument("--k", type=int, default=10)
    te = sub.add_parser("token-economy")
    te.add_argument("--data", type=Path, default=RESULTS_DIR / "token_economy.json")
    for sp in (lo, te):
        sp.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if args.what == "locomo":
        paths = plot_locomo(_load(args.retrieval), _load(args.offline), args.out_dir, args.k)
        out: dict[str, Any] = {"plots": [relpath(x) for x in paths]}
    else:
        data = _load(args.data)
        if data is None:
            raise SystemExit(f"{args.data} not found: run benchmarks.token_economy first")
        out = {**token_economy_summary(data),
               "plots": [relpath(plot_token_economy(data, args.out_dir))]}  # fmt: skip
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
