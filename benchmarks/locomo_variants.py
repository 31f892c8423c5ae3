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
from serve_app.retrieval.rerank import DocRow, RerankParams, UserDocs, rerank

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


@dataclass
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]
    bm25: list[tuple[str, float]]  # top MAX_DEPTH
    dense: list[tuple[str, float]]  # top MAX_DEPTH


@dataclass
class Prepared:
    conv_id: str
    docs: UserDocs
    sources: dict[str, list[str]]  # entry id -> source message ids
    questions: list[Question]


def prepare(conv: LocomoConversation, embedder: Embedder) -> Prepared:
    entries = conv_entries(conv, "message_ctx", True)
    ids = [str(i) for i in range(len(entries))]
    index = BM25Index("bm25s")
    index.rebuild([(i, bm25_text(e.text, e.index_text)) for i, e in zip(ids, entries, strict=True)])
    mat = embedder.encode([e.index_text for e in entries])
    qvecs = embedder.encode([q.question for q in conv.questions])
    questions = []
    for q, v in zip(conv.questions, qvecs, strict=True):
        sims = mat @ v
        top = np.argsort(-sims)[:MAX_DEPTH]
        questions.append(
            Question(
                q.question,
                q.category,
                q.evidence,
                index.search(q.question, MAX_DEPTH),
                [(ids[i], float(sims[i])) for i in top],
            )
        )
    rows = [
        DocRow(i, e.session_id, e.ts, e.speaker, e.text) for i, e in zip(ids, entries, strict=True)
    ]
    return Prepared(
        conv.conv_id,
        UserDocs.build(rows),
        {i: e.source_message_ids for i, e in zip(ids, entries, strict=True)},
        questions,
    )


def question_recalls(p: Prepared, cfg: Config) -> list[tuple[int, list[float]]]:
    """(category, [recall@k for k in KS]) per question."""
    f = cfg.fusion
    out = []
    for q in p.questions:
        fused = fuse(
            [q.bm25[: f.depth], q.dense[: f.depth]],
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
# The chosen configuration (the LOO folds pick it or its grid neighbours; see the LOO table).
CHOSEN = Config(
    Fusion(depth=50, dense_weight=0.7),
    RerankParams(speaker=0.3, time=0.2, date=0.1, neighbour=0.0, session=0.0, diversity=0.1),
)


def one_signal_variants() -> list[tuple[str, Config]]:
    """Each signal alone on the service's fusion, at a few strengths."""
    out: list[tuple[str, Config]] = [("service_baseline", BASE)]
    for w in (0.1, 0.2, 0.3, 0.5):
        out.append((f"speaker_{w}", replace(BASE, rerank=RerankParams(speaker=w))))
    for w in (0.1, 0.2, 0.3):
        out.append((f"time_{w}", replace(BASE, rerank=RerankParams(time=w))))
    for w in (0.1, 0.3):
        out.append((f"date_{w}", replace(BASE, rerank=RerankParams(date=w))))
    for w in (0.1, 0.2, 0.3):
        out.append((f"neighbour_{w}", replace(BASE, rerank=RerankParams(neighbour=w))))
    for w in (0.1, 0.2):
        out.append(
            (
                f"neighbour_{w}_expand5",
                replace(BASE, rerank=RerankParams(neighbour=w, expand_top=5)),
            )
        )
    for w in (0.1, 0.2, 0.3):
        out.append((f"session_{w}", replace(BASE, rerank=RerankParams(session=w))))
    for w in (0.05, 0.1, 0.2):
        out.append((f"diversity_{w}", replace(BASE, rerank=RerankParams(diversity=w))))
    for d in (30, 75, 100):
        out.append((f"depth_{d}", replace(BASE, fusion=Fusion(depth=d))))
    for w in (0.5, 1.0):
        out.append((f"dense_weight_{w}", replace(BASE, fusion=Fusion(dense_weight=w))))
    out.append(("normalise_zscore", replace(BASE, fusion=Fusion(normalise="zscore"))))
    out.append(("chosen", CHOSEN))
    return out


def grid() -> list[Config]:
    """The leave-one-conversation-out search space."""
    out = []
    for depth, dw, spk, tim, nb, ses, div in itertools.product(
        (50, 100), (0.5, 0.7), (0.2, 0.3, 0.5), (0.1, 0.2, 0.3), (0.0, 0.1), (0.0, 0.1), (0.0, 0.1)
    ):
        out.append(
            Config(
                Fusion(depth=depth, dense_weight=dw),
                RerankParams(
                    speaker=spk, time=tim, date=0.1, neighbour=nb, session=ses, diversity=div
                ),
            )
        )
    return out


def leave_one_out(runner: Runner, configs: Sequence[Config]) -> dict[str, Any]:
    conv_ids = [p.conv_id for p in runner.prepared]
    folds = []
    for held in conv_ids:
        train = [c for c in conv_ids if c != held]
        scored = [(r10(runner.rows(cfg, train)), i) for i, cfg in enumerate(configs)]
        best_score, best_i = max(scored, key=lambda t: (t[0], -t[1]))
        cfg = configs[best_i]
        folds.append(
            {
                "held_out": held,
                "params": describe(cfg),
                "in_fold_recall@10": round(best_score, 4),
                "held_out_recall@10": round(r10(runner.rows(cfg, [held])), 4),
            }
        )
    in_mean = statistics.mean(f["in_fold_recall@10"] for f in folds)
    out_mean = statistics.mean(f["held_out_recall@10"] for f in folds)
    return {
        "grid_size": len(configs),
        "folds": folds,
        "mean_in_fold_recall@10": round(in_mean, 4),
        "mean_held_out_recall@10": round(out_mean, 4),
        "gap": round(in_mean - out_mean, 4),
    }


def describe(cfg: Config) -> dict[str, Any]:
    r = {k: v for k, v in asdict(cfg.rerank).items() if v != getattr(RerankParams(), k)}
    return {"fusion": asdict(cfg.fusion), "rerank": r}


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


def micro_benchmark(n: int = 10_000, candidates: int = 100, queries: int = 200) -> dict:
    """Rerank cost at `n` memories of one user: build of the per-user arrays, and per query
    (all signals on, `candidates` fused candidates)."""
    rng = random.Random(0)
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        session = i // 20
        speaker = ("Alice", "Bob")[i % 2]
        text = f"[1 May 2023, Monday] {speaker}: " + " ".join(rng.choices(_WORDS, k=15))
        rows.append(DocRow(str(i), f"s{session}", t0 + timedelta(days=session), speaker, text))
    start = time.perf_counter()
    docs = UserDocs.build(rows)
    build_ms = (time.perf_counter() - start) * 1000
    params = replace(CHOSEN.rerank, neighbour=0.1, session=0.1, expand_top=5, date=0.1)
    qs = [
        "When did Alice go camping with her kids in May 2023?",
        "What books has Bob read?",
        "How long ago did Alice start painting?",
        "What does Bob like about music?",
    ]
    timings = []
    for k in range(queries):
        cand_pos = rng.sample(range(n), candidates)
        cands = sorted(((str(p), rng.random()) for p in cand_pos), key=lambda t: -t[1])
        start = time.perf_counter()
        rerank(qs[k % len(qs)], cands, docs, params)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {
        "memories": n,
        "candidates": candidates,
        "queries": queries,
        "signals": {k: v for k, v in asdict(params).items()},
        "build_user_docs_ms": round(build_ms, 1),
        "rerank_ms_p50": round(timings[len(timings) // 2], 3),
        "rerank_ms_p95": round(timings[int(len(timings) * 0.95)], 3),
        "rerank_ms_max": round(timings[-1], 3),
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
    chosen_score = r10(runner.rows(CHOSEN))
    base_score = r10(runner.rows(BASE))
    table = []
    for name, cfg in one_signal_variants():
        s = summarise(runner.rows(cfg))
        score = s["overall"]["recall@10"]
        kept = name == "chosen" or _in_chosen(name, cfg) and score > base_score
        table.append({"variant": name, "kept": kept, "config": describe(cfg), **s})
    report: dict[str, Any] = {
        "data": str(args.data),
        "conversations": [p.conv_id for p in prepared],
        "baseline_recall@10": round(base_score, 4),
        "chosen_recall@10": round(chosen_score, 4),
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


def _in_chosen(name: str, cfg: Config) -> bool:
    """A one-signal variant is kept when the chosen configuration uses that signal."""
    for field, value in asdict(cfg.rerank).items():
        if value and value != getattr(RerankParams(), field) and getattr(CHOSEN.rerank, field):
            return True
    return False


if __name__ == "__main__":
    main()
