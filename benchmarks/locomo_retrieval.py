"""Quality yardstick: LoCoMo evidence recall@k through the HTTP API.

    python -m benchmarks.locomo_retrieval --data ../shared/data/locomo-dev --url http://127.0.0.1:8000

Each conversation is ingested as its own user (user_id = conversation id, one session per
LoCoMo session, message_id = dia_id, name = speaker, timestamp = the session's date, image
captions appended as `[shares image: ...]`); every question of categories 1-4 is asked through
/v1/search. Re-running is safe: message ids make ingestion idempotent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.common import auth_headers
from benchmarks.locomo_data import (
    CATEGORY_NAMES,
    QA_CATEGORIES,
    LocomoConversation,
    evidence_recall,
    load_conversations,
)

KS = (1, 5, 10, 20)


def ingest(client: httpx.Client, conv: LocomoConversation, user_id: str) -> float:
    t0 = time.perf_counter()
    for i, session in enumerate(conv.sessions):
        messages = [
            {
                "role": "user",
                "content": t.content,
                "message_id": t.message_id,
                "name": t.speaker,
                "timestamp": session.ts.isoformat(),
            }
            for t in session.turns
        ]
        last = i == len(conv.sessions) - 1
        r = client.post(
            "/v1/memories",
            json={
                "user_id": user_id,
                "session_id": session.session_id,
                "messages": messages,
                "flush": True,
                "wait": last,
            },
        )
        r.raise_for_status()
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def evaluate(
    client: httpx.Client, conv: LocomoConversation, user_id: str, strategy: str, limit: int
) -> tuple[list[dict], list[float]]:
    rows, latencies = [], []
    for q in conv.questions:
        if q.category not in QA_CATEGORIES or not q.evidence:
            continue
        t0 = time.perf_counter()
        r = client.post(
            "/v1/search",
            json={"user_id": user_id, "query": q.question, "limit": limit, "strategy": strategy},
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        ranked = [hit["source_message_ids"] for hit in r.json()["results"]]
        rows.append(
            {
                "category": q.category,
                **{f"r@{k}": evidence_recall(ranked, q.evidence, k) for k in KS},
            }
        )
    return rows, latencies


def summarise(rows: list[dict]) -> dict:
    def mean(sel: list[dict], key: str) -> float:
        return round(statistics.fmean(r[key] for r in sel), 4) if sel else 0.0

    out = {"questions": len(rows), **{f"recall@{k}": mean(rows, f"r@{k}") for k in KS}}
    out["by_category"] = {
        CATEGORY_NAMES[c]: {
            "questions": len(sel := [r for r in rows if r["category"] == c]),
            **{f"recall@{k}": mean(sel, f"r@{k}") for k in KS},
        }
        for c in QA_CATEGORIES
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--url", required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--strategies", default="hybrid", help="comma list: hybrid,embedding,bm25")
    p.add_argument("--limit", type=int, default=30, help="search results per question")
    p.add_argument("--conversations", type=int, default=0, help="only the first N (0: all)")
    p.add_argument("--user-prefix", default="", help="prefix for user ids (default: none)")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write per-category PNGs to DIR, next to the baselines of "
        "benchmarks/results/locomo_offline.json when it exists",
    )
    args = p.parse_args(argv)

    convs = load_conversations(args.data)
    if args.conversations:
        convs = convs[: args.conversations]
    report: dict = {"data": str(args.data), "url": args.url, "conversations": len(convs)}
    with httpx.Client(base_url=args.url, timeout=600, headers=auth_headers()) as client:
        ingest_s = {c.conv_id: ingest(client, c, args.user_prefix + c.conv_id) for c in convs}
        report["ingest_seconds"] = {k: round(v, 2) for k, v in ingest_s.items()}
        report["messages"] = sum(len(s.turns) for c in convs for s in c.sessions)
        for strategy in args.strategies.split(","):
            rows, lat = [], []
            for c in convs:
                r, l_ = evaluate(client, c, args.user_prefix + c.conv_id, strategy, args.limit)
                rows += r
                lat += l_
            report[strategy] = {
                **summarise(rows),
                "latency_ms": {
                    "median": round(statistics.median(lat), 2),
                    "p95": round(percentile(lat, 0.95), 2),
                },
            }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        from benchmarks.common import RESULTS_DIR
        from benchmarks.plots import plot_locomo

        offline = RESULTS_DIR / "locomo_offline.json"
        baselines = json.loads(offline.read_text()) if offline.exists() else None
        for path in plot_locomo(report, baselines, args.plot):
            print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
