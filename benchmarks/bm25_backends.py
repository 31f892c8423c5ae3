"""BM25 backend latency: rank-bm25 vs bm25s at 1k / 10k / 50k documents. Prints JSON.

Documents are LoCoMo dev turns in their entry form (date + speaker prefix); beyond the ~2.8k
real turns, each further document joins halves of two random turns, so the vocabulary and the
length distribution stay realistic. Queries are the LoCoMo questions.

    .venv/bin/python -m benchmarks.bm25_backends --data ../shared/data/locomo-dev \
        [--sizes 1000 10000 50000] [--out benchmarks/results/bm25_backends.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.locomo_data import load_conversations
from serve_app.pipeline.extractive import build_entries
from serve_app.retrieval.bm25 import BACKENDS, BM25Index


def corpus_of(turns: list[str], n: int, rng: random.Random) -> list[tuple[str, str]]:
    docs = list(turns[:n])
    while len(docs) < n:
        a, b = rng.choice(turns), rng.choice(turns)
        docs.append(a[: len(a) // 2] + " " + b[len(b) // 2 :])
    return [(f"m{i}", t) for i, t in enumerate(docs)]


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def measure(
    backend: str, docs: list[tuple[str, str]], queries: list[str], limit: int, clients: int
) -> dict:
    idx = BM25Index(backend)
    t0 = time.perf_counter()
    idx.rebuild(docs)
    cold = time.perf_counter() - t0
    changed = [*docs[:-10], *((f"new{i}", docs[i][1] + " again") for i in range(10))]
    t0 = time.perf_counter()
    idx.rebuild(changed)  # ten new documents: only they are tokenized again
    warm = time.perf_counter() - t0

    lat = []
    for q in queries:
        t0 = time.perf_counter()
        idx.search(q, limit)
        lat.append((time.perf_counter() - t0) * 1000)
    allowed = {d for d, _ in docs[::10]}  # a filter that keeps 10% (e.g. one session/speaker)
    lat_f = []
    for q in queries:
        t0 = time.perf_counter()
        idx.search(q, limit, allowed_ids=allowed)
        lat_f.append((time.perf_counter() - t0) * 1000)

    # `clients` threads issuing queries back to back, as concurrent requests to one replica.
    def one(q: str) -> float:
        t0 = time.perf_counter()
        idx.search(q, limit)
        return (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat_c = list(pool.map(one, queries))
    wall = time.perf_counter() - t0
    return {
        "rebuild_cold_s": round(cold, 3),
        "rebuild_after_10_changes_s": round(warm, 3),
        "query_ms_p50": round(statistics.median(lat), 3),
        "query_ms_p95": round(pct(lat, 0.95), 3),
        "filtered_10pct_query_ms_p50": round(statistics.median(lat_f), 3),
        "filtered_10pct_query_ms_p95": round(pct(lat_f, 0.95), 3),
        f"concurrent_{clients}_ms_p50": round(statistics.median(lat_c), 3),
        f"concurrent_{clients}_ms_p95": round(pct(lat_c, 0.95), 3),
        f"concurrent_{clients}_qps": round(len(queries) / wall, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/locomo-dev")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--limit", type=int, default=50, help="candidates per query, as MemoryIndex")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    convs = load_conversations(args.data)
    turns = [
        e.index_text
        for c in convs
        for e in build_entries(c.stored_messages(), None, unit="message_ctx")
    ]
    queries = [q.question for c in convs for q in c.questions]
    rng = random.Random(0)
    report: dict = {"queries": len(queries), "limit": args.limit, "results": {}}
    for n in args.sizes:
        docs = corpus_of(turns, n, rng)
        report["results"][str(n)] = {
            b: measure(b, docs, queries, args.limit, args.clients) for b in BACKENDS
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
