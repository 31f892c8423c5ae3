"""LoCoMo recall variants of the second search stage (serve_app/retrieval/rerank.py), offline.

Builds the service's entries, BM25 index and MiniLM vectors once per dev conversation
(benchmarks.locomo_offline's building blocks and embedding cache), then scores every variant of
fusion depth / weights and rerank signals with the yardstick's evidence recall@k. Parameters
are chosen by leave-one-conversation-out: for each held-out conversation, the grid point with
the best recall@10 on the other four is scored on it. Also times the rerank step at 10,000
synthetic memories. Prints JSON and writes benchmarks/results/locomo_variants.json.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.locomo_variants \
        --data ../shared/data/locomo-dev --embed-cache /tmp/locomo_embed.pkl
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.locomo_data import (
    CATEGORY_NAMES,
    LocomoConversation,
    evidence_recall,
    load_conversations,
)
from benchmarks.locomo_offline import KS, Embedder, conv_entries
from serve_app.retrieval.bm25 import BM25Index, bm25_text
from serve_app.retrieval.fusion import CANDIDATE_DEPTH, HYBRID_WEIGHTS, fuse
from serve_app.retrieval.rerank import CANDIDATE_DEPTH as RERANK_DEPTH
from serve_app.retrieval.rerank import (
    TUNED_PARAMS,
    DocRow,
    RerankParams,
    UserDocs,
    query_without_speakers,
    rerank,
)

MAX_DEPTH = 100


@dataclass(frozen=True)
class Fusion:
    depth: int = CANDIDATE_DEPTH  # candidates per retriever
    dense_weight: float = HYBRID_WEIGHTS[1]  # BM25 weight is 1
    normalise: str = "minmax"


@dataclass(frozen=True)
class Config:
    fusion: Fusion = Fusion()
    rerank: RerankParams = RerankParams()
    strip_speakers: bool = False  # search with query_without_speakers(query)
    # Dense pseudo-relevance feedback: the query vector plus prf_beta x the mean vector of the
    # first pass's prf_k best results, searched again (needs the user's vectors in memory).
    prf_k: int = 0
    prf_beta: float = 0.0


@dataclass
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]
    bm25: list[tuple[str, float]]  # top MAX_DEPTH
    dense: list[tuple[str, float]]  # top MAX_DEPTH
    bm25_stripped: list[tuple[str, float]]  # the same for the query without speaker names
    dense_stripped: list[tuple[str, float]]
    vector_stripped: np.ndarray


@dataclass
class Prepared:
    conv_id: str
    docs: UserDocs
    sources: dict[str, list[str]]  # entry id -> source message ids
    questions: list[Question]
    matrix: np.ndarray  # entry vectors, by position


def prepare(conv: LocomoConversation, embedder: Embedder) -> Prepared:
    entries = conv_entries(conv, "message_ctx", True)
    ids = [str(i) for i in range(len(entries))]
    index = BM25Index("bm25s")
    index.rebuild([(i, bm25_text(e.text, e.index_text)) for i, e in zip(ids, entries, strict=True)])
    rows = [
        DocRow(i, e.session_id, e.ts, e.speaker, e.text) for i, e in zip(ids, entries, strict=True)
    ]
    docs = UserDocs.build(rows)
    mat = embedder.encode([e.index_text for e in entries])
    texts = [q.question for q in conv.questions]
    stripped = [query_without_speakers(t, docs.speaker_names) for t in texts]
    qvecs, svecs = embedder.encode(texts), embedder.encode(stripped)

    def dense(v: np.ndarray) -> list[tuple[str, float]]:
        sims = mat @ v
        return [(ids[i], float(sims[i])) for i in np.argsort(-sims)[:MAX_DEPTH]]

    questions = [
        Question(
            q.question,
            q.category,
            q.evidence,
            index.search(q.question, MAX_DEPTH),
            dense(v),
            index.search(st, MAX_DEPTH),
            dense(sv),
            sv,
        )
        for q, st, v, sv in zip(conv.questions, stripped, qvecs, svecs, strict=True)
    ]
    return Prepared(
        conv.conv_id,
        docs,
        {i: e.source_message_ids for i, e in zip(ids, entries, strict=True)},
        questions,
        mat,
    )


def question_recalls(p: Prepared, cfg: Config) -> list[tuple[int, list[float]]]:
    """(category, [recall@k for k in KS]) per question."""
    f = cfg.fusion
    out = []
    for q in p.questions:
        bm25, dense = (
            (q.bm25_stripped, q.dense_stripped) if cfg.strip_speakers else (q.bm25, q.dense)
        )
        fused = fuse(
            [bm25[: f.depth], dense[: f.depth]],
            method="score",
            weights=(1.0, f.dense_weight),
            normalise=f.normalise,
        )
        ranked = rerank(q.text, fused, p.docs, cfg.rerank)
        if cfg.prf_k:
            top = [p.docs.pos[i] for i, _ in ranked[: cfg.prf_k]]
            v = q.vector_stripped + cfg.prf_beta * p.matrix[top].mean(axis=0)
            sims = p.matrix @ (v / np.linalg.norm(v))
            dense = [(p.docs.ids[i], float(sims[i])) for i in np.argsort(-sims)[: f.depth]]
            fused = fuse(
                [bm25[: f.depth], dense],
                method="score",
                weights=(1.0, f.dense_weight),
                normalise=f.normalise,
            )
            ranked = rerank(q.text, fused, p.docs, cfg.rerank)
        sources = [p.sources[i] for i, _ in ranked]
        out.append((q.category, [evidence_recall(sources, q.evidence, k) for k in KS]))
    return out


def summarise(rows: Sequence[tuple[int, list[float]]]) -> dict[str, Any]:
    def block(rs: list[list[float]]) -> dict[str, float]:
        arr = np.asarray(rs)
        return {f"recall@{k}": round(float(arr[:, i].mean()), 4) for i, k in enumerate(KS)}

    cats = sorted({c for c, _ in rows})
    return {
        "questions": len(rows),
        "overall": block([r for _, r in rows]),
        "per_category": {
            f"{c}_{CATEGORY_NAMES[c]}": block([r for cc, r in rows if cc == c]) for c in cats
        },
    }


def r10(rows: Sequence[tuple[int, list[float]]]) -> float:
    i = KS.index(10)
    return float(np.mean([r[i] for _, r in rows])) if rows else 0.0


class Runner:
    """Caches per-conversation question recalls per config (the LOO grid revisits them)."""

    def __init__(self, prepared: list[Prepared]) -> None:
        self.prepared = prepared
        self._cache: dict[tuple[Config, str], list[tuple[int, list[float]]]] = {}

    def rows(
        self, cfg: Config, convs: Sequence[str] | None = None
    ) -> list[tuple[int, list[float]]]:
        out = []
        for p in self.prepared:
            if convs is not None and p.conv_id not in convs:
                continue
            key = (cfg, p.conv_id)
            if key not in self._cache:
                self._cache[key] = question_recalls(p, cfg)
            out.extend(self._cache[key])
        return out


# --- variants -----------------------------------------------------------------------------

BASE = Config()
# The chosen configuration: the grid point best on all five conversations (the leave-one-out
# folds pick it or a neighbour of it; see the LOO table).
CHOSEN = Config(Fusion(depth=RERANK_DEPTH, dense_weight=0.7), TUNED_PARAMS, strip_speakers=True)


def _rr(**kw: float) -> RerankParams:
    return RerankParams(**kw)  # type: ignore[arg-type]


def variants() -> list[tuple[str, Config]]:
    """Each signal alone on the service's fusion at a few strengths; then the chosen stack
    built up one signal at a time; then additions on top of the chosen configuration."""
    out: list[tuple[str, Config]] = [("service_baseline", BASE)]
    alone = {
        "speaker": (0.1, 0.2, 0.3, 0.5, 1.0),
        "time": (0.1, 0.2, 0.3),
        "date": (0.1, 0.3),
        "neighbour": (0.1, 0.2, 0.3, 0.5),
        "session": (0.1, 0.2, 0.3),
        "diversity": (0.05, 0.1, 0.2),
        "length": (0.1, 0.2, 0.3),
        "question": (0.1, 0.2, 0.3),
    }
    for signal, weights in alone.items():
        out += [(f"{signal}_{w}", replace(BASE, rerank=_rr(**{signal: w}))) for w in weights]
    out.append(("neighbour_0.2_expand5", replace(BASE, rerank=_rr(neighbour=0.2, expand_top=5))))
    out.append(("strip_speakers", replace(BASE, strip_speakers=True)))
    out += [(f"depth_{d}", replace(BASE, fusion=Fusion(depth=d))) for d in (30, 75, 100)]
    out += [(f"dense_weight_{w}", replace(BASE, fusion=Fusion(dense_weight=w))) for w in (0.5, 1.0)]
    out.append(("normalise_zscore", replace(BASE, fusion=Fusion(normalise="zscore"))))
    out.append(("normalise_max", replace(BASE, fusion=Fusion(normalise="max"))))
    stack: dict[str, float] = {}
    steps = (("speaker", 0.5), ("time", 0.3), ("date", 0.1), ("neighbour", 0.5), ("session", 0.2))
    for signal, w in steps:
        stack[signal] = w
        out.append((f"stack_+{signal}", replace(BASE, rerank=_rr(**stack))))
    cfg = replace(BASE, rerank=_rr(**stack), fusion=Fusion(depth=100))
    out.append(("stack_+depth100", cfg))
    cfg = replace(cfg, strip_speakers=True)
    out.append(("stack_+strip_speakers", cfg))
    cfg = replace(cfg, rerank=replace(cfg.rerank, speaker=1.0))
    out.append(("stack_+speaker1.0", cfg))
    out.append(("stack_+question (chosen)", CHOSEN))
    on_top = {
        "chosen_+diversity0.02_head10": replace(CHOSEN.rerank, diversity=0.02, diversity_head=10),
        "chosen_+diversity0.05_head10": replace(CHOSEN.rerank, diversity=0.05, diversity_head=10),
        "chosen_+expand5": replace(CHOSEN.rerank, expand_top=5),
        "chosen_neighbour0.3": replace(CHOSEN.rerank, neighbour=0.3),
        "chosen_session0.3": replace(CHOSEN.rerank, session=0.3),
        "chosen_time0.2": replace(CHOSEN.rerank, time=0.2),
        "chosen_speaker0.5": replace(CHOSEN.rerank, speaker=0.5),
        "chosen_no_date": replace(CHOSEN.rerank, date=0.0),
        "chosen_+length0.1": replace(CHOSEN.rerank, length=0.1),
        "chosen_+length0.2": replace(CHOSEN.rerank, length=0.2),
        "chosen_question0.3": replace(CHOSEN.rerank, question=0.3),
    }
    out += [(name, replace(CHOSEN, rerank=rr)) for name, rr in on_top.items()]
    out.append(("chosen_depth50", replace(CHOSEN, fusion=Fusion(depth=50))))
    out.append(("chosen_dense_weight1.0", replace(CHOSEN, fusion=Fusion(100, 1.0))))
    for k, beta in ((3, 0.3), (3, 0.5), (5, 0.5), (10, 1.0)):
        out.append((f"chosen_+dense_prf_k{k}_b{beta}", replace(CHOSEN, prf_k=k, prf_beta=beta)))
    return out


def grid() -> list[Config]:
    """The leave-one-conversation-out search space (diversity, neighbour expansion, the length
    prior and PRF left out: they lost recall or changed nothing)."""
    out = []
    for depth, dw, spk, tim, nb, ses, qst in itertools.product(
        (50, 100), (0.7, 1.0), (0.5, 1.0), (0.2, 0.3), (0.3, 0.5), (0.2, 0.3), (0.1, 0.2, 0.3)
    ):
        out.append(
            Config(
                Fusion(depth=depth, dense_weight=dw),
                RerankParams(
                    speaker=spk, time=tim, date=0.1, neighbour=nb, session=ses, question=qst
                ),
                strip_speakers=True,
            )
        )
    return out


def leave_one_out(runner: Runner, configs: Sequence[Config]) -> dict[str, Any]:
    """For each held-out conversation, the grid point with the best recall@10 on the other
    four (questions pooled), scored on the held-out one; then the grid point best on all five,
    which is the configuration to ship."""
    conv_ids = [p.conv_id for p in runner.prepared]
    folds = []
    held_rows: list[tuple[int, list[float]]] = []
    for held in conv_ids:
        train = [c for c in conv_ids if c != held]
        cfg, best = _best(runner, configs, train)
        rows = runner.rows(cfg, [held])
        held_rows.extend(rows)
        folds.append(
            {
                "held_out": held,
                "params": describe(cfg),
                "in_fold_recall@10": round(best, 4),
                "held_out_recall@10": round(r10(rows), 4),
            }
        )
    in_mean = statistics.mean(f["in_fold_recall@10"] for f in folds)
    out_mean = statistics.mean(f["held_out_recall@10"] for f in folds)
    final, _ = _best(runner, configs, conv_ids)
    return {
        "grid_size": len(configs),
        "folds": folds,
        "mean_in_fold_recall@10": round(in_mean, 4),
        "mean_held_out_recall@10": round(out_mean, 4),
        "gap": round(in_mean - out_mean, 4),
        # Every question scored by the parameters chosen without its conversation.
        "held_out_pooled": summarise(held_rows),
        "best_on_all_dev": {"params": describe(final), "is_chosen": final == CHOSEN},
    }


def _best(runner: Runner, configs: Sequence[Config], convs: Sequence[str]) -> tuple[Config, float]:
    scored = [(r10(runner.rows(cfg, convs)), -i) for i, cfg in enumerate(configs)]
    score, neg_i = max(scored)
    return configs[-neg_i], score


def describe(cfg: Config) -> dict[str, Any]:
    r = {k: v for k, v in asdict(cfg.rerank).items() if v != getattr(RerankParams(), k)}
    out: dict[str, Any] = {"fusion": asdict(cfg.fusion), "rerank": r}
    if cfg.strip_speakers:
        out["strip_speakers"] = True
    if cfg.prf_k:
        out["dense_prf"] = {"k": cfg.prf_k, "beta": cfg.prf_beta}
    return out


# --- cost ---------------------------------------------------------------------------------

_WORDS = [
    "went",
    "hike",
    "yesterday",
    "painting",
    "kids",
    "camping",
    "book",
    "concert",
    "last",
    "week",
    "dog",
    "job",
    "team",
    "game",
    "trip",
    "beach",
    "friends",
    "family",
    "new",
    "started",
    "love",
    "music",
    "class",
    "school",
    "support",
    "group",
    "year",
    "ago",
]


def micro_benchmark(n: int = 10_000, candidates: int = 200, queries: int = 200) -> dict:
    """Cost of the added steps at `n` memories of one user: building the per-user arrays
    (once per index version), and per query query_without_speakers + rerank with the chosen
    signals over `candidates` fused candidates."""
    rng = random.Random(0)
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        session = i // 20
        speaker = ("Alice", "Bob")[i % 2]
        text = f"[1 May 2023, Monday] {speaker}: " + " ".join(rng.choices(_WORDS, k=15))
        rows.append(DocRow(str(i), f"s{session}", t0 + timedelta(days=session), speaker, text))
    start = time.perf_counter()
    docs = UserDocs.build(rows[:-20])
    build_ms = (time.perf_counter() - start) * 1000
    # An ingest batch of 20 memories: a rebuild that reuses the unchanged rows' features.
    start = time.perf_counter()
    docs = UserDocs.build(rows, previous=docs)
    rebuild_ms = (time.perf_counter() - start) * 1000
    params = CHOSEN.rerank
    qs = [
        "When did Alice go camping with her kids in May 2023?",
        "What books has Bob read?",
        "How long ago did Alice start painting?",
        "What does Bob like about music?",
    ]
    wall, cpu, fusion = [], [], []
    for k in range(queries):
        lists = [
            sorted(((str(p), rng.random()) for p in rng.sample(range(n), d)), key=lambda t: -t[1])
            for d in (CANDIDATE_DEPTH, CANDIDATE_DEPTH, 100, 100)
        ]
        c0 = time.thread_time()
        fuse(lists[:2], method="score", weights=(1.0, 0.7))
        c1 = time.thread_time()
        fuse(lists[2:], method="score", weights=(1.0, 0.7))
        fusion.append(((time.thread_time() - c1) - (c1 - c0)) * 1000)
        cand_pos = rng.sample(range(n), candidates)
        cands = sorted(((str(p), rng.random()) for p in cand_pos), key=lambda t: -t[1])
        query = qs[k % len(qs)]
        w0, c0 = time.perf_counter(), time.thread_time()
        query_without_speakers(query, docs.speaker_names)
        rerank(query, cands, docs, params)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)

    def pct(xs: list[float], q: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(len(xs) * q))], 3)

    return {
        "memories": n,
        "candidates": candidates,
        "queries": queries,
        "signals": describe(CHOSEN),
        "build_user_docs_ms": round(build_ms, 1),
        "rebuild_user_docs_after_20_new_ms": round(rebuild_ms, 1),
        # CPU time of this thread: the machine is shared, so wall time includes waiting.
        "added_cpu_ms_p50": pct(cpu, 0.5),
        "added_cpu_ms_p95": pct(cpu, 0.95),
        "added_cpu_ms_max": pct(cpu, 1.0),
        "added_wall_ms_p50": pct(wall, 0.5),
        "added_wall_ms_p95": pct(wall, 0.95),
        # Fusing 2 x 100 candidates instead of 2 x CANDIDATE_DEPTH (the chosen depth).
        "deeper_fusion_cpu_ms_p50": pct(fusion, 0.5),
    }


# --- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/locomo-dev")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/locomo_variants.json"))
    ap.add_argument("--embed-cache", type=Path, help="pickle of text -> vector kept across runs")
    ap.add_argument("--no-loo", action="store_true", help="skip the leave-one-out grid")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    convs = load_conversations(args.data)
    embedder = Embedder(args.embed_cache)
    prepared = [prepare(c, embedder) for c in convs]
    embedder.save()
    runner = Runner(prepared)
    table = []
    for name, cfg in variants():
        s = summarise(runner.rows(cfg))
        kept = is_kept(name)
        table.append({"variant": name, "kept": kept, "config": describe(cfg), **s})
    report: dict[str, Any] = {
        "data": str(args.data),
        "conversations": [p.conv_id for p in prepared],
        "baseline": summarise(runner.rows(BASE)),
        "chosen": {"config": describe(CHOSEN), **summarise(runner.rows(CHOSEN))},
        "variants": table,
    }
    if not args.no_loo:
        report["leave_one_conversation_out"] = leave_one_out(runner, grid())
    report["cost"] = micro_benchmark()
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".md").write_text(to_markdown(report))


_CATS = ("1_multi_hop", "2_temporal", "3_open_domain", "4_single_hop")


def to_markdown(report: dict[str, Any]) -> str:
    """The variants and leave-one-out tables, for the README."""

    def cells(summary: dict[str, Any]) -> str:
        per = summary["per_category"]
        values = [summary["overall"]["recall@10"], *(per[c]["recall@10"] for c in _CATS)]
        return " | ".join(f"{v:.3f}" for v in values)

    head = "| overall | multi-hop | temporal | open-domain | single-hop |"
    rule = "|---|---|---|---|---|"
    lines = [
        "LoCoMo dev evidence recall@10, offline (benchmarks/locomo_variants.py).",
        "",
        f"| variant | kept {head}",
        f"|---|---{rule}",
    ]
    for v in report["variants"]:
        lines.append(f"| {v['variant']} | {'kept' if v['kept'] else 'dropped'} | {cells(v)} |")
    loo = report.get("leave_one_conversation_out")
    if loo:
        lines += [
            "",
            f"Leave one conversation out ({loo['grid_size']} grid points):",
            "",
            "| held out | params chosen on the other four | in-fold | held-out |",
            "|---|---|---|---|",
        ]
        for f in loo["folds"]:
            prm = f["params"]
            desc = ", ".join(f"{k} {v}" for k, v in prm["rerank"].items())
            desc += (
                f"; depth {prm['fusion']['depth']}, dense weight {prm['fusion']['dense_weight']}"
            )
            lines.append(
                f"| {f['held_out']} | {desc} | {f['in_fold_recall@10']:.3f}"
                f" | {f['held_out_recall@10']:.3f} |"
            )
        lines.append(
            f"| mean | | {loo['mean_in_fold_recall@10']:.3f}"
            f" | {loo['mean_held_out_recall@10']:.3f} |"
        )
        lines += [
            "",
            "Every question scored with the parameters chosen without its conversation:",
            "",
            head,
            rule,
            f"| {cells(loo['held_out_pooled'])} |",
        ]
    cost = report.get("cost")
    if cost:
        lines += [
            "",
            f"Cost at {cost['memories']:,} memories, {cost['candidates']} candidates: "
            f"added CPU per query p50 {cost['added_cpu_ms_p50']} ms, p95 "
            f"{cost['added_cpu_ms_p95']} ms; per-user arrays built in "
            f"{cost['build_user_docs_ms']} ms, rebuilt after 20 new memories in "
            f"{cost['rebuild_user_docs_after_20_new_ms']} ms (once per index version).",
        ]
    return "\n".join(lines) + "\n"


def is_kept(variant: str) -> bool:
    """Whether the variant's method is part of the chosen configuration."""
    if variant.startswith("stack_") or variant == "depth_100":
        return True
    method = variant.rsplit("_", 1)[0] if variant[-1].isdigit() else variant
    kept = {"speaker", "time", "date", "neighbour", "session", "question", "strip_speakers"}
    return method in kept


if __name__ == "__main__":
    main()
