"""The query encoder's graphs against each other: the exact ONNX graph, its int8 graph with one
scale per tensor and with one scale per output channel (what `onnx-int8` ships). For each int8
graph, the cosine of its query vectors to the exact ones over the LoCoMo dev questions, and for
every graph the time per query on one thread at batch 1 and 4. Prints JSON.

    python -m benchmarks.query_encoder [--data ../shared/data/locomo-dev] [--questions 600]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import machine_info, relpath, write_result
from benchmarks.locomo_data import load_conversations
from serve_app.encoding.onnx_encoder import OnnxSentenceEncoder, load_session, quantize
from serve_app.settings import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model


def ms_per_query(encoder: OnnxSentenceEncoder, texts: list[str], batch: int) -> float:
    """Mean time per query over at least one second, after a warm-up."""
    texts = texts[:batch]
    for _ in range(5):
        encoder.encode(texts)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        encoder.encode(texts)
        n += 1
    return round((time.perf_counter() - t0) / n / batch * 1000, 3)


def per_tensor(exact: OnnxSentenceEncoder, model_dir: str, cache: Path) -> OnnxSentenceEncoder:
    """The int8 graph as first shipped: one scale per weight tensor."""
    graph = cache / "per-tensor-int8.onnx"
    quantize(exact.graph, graph, per_channel=False)
    encoder = OnnxSentenceEncoder(model_dir, cache)
    encoder.session = load_session(graph)
    return encoder


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/locomo-dev")
    ap.add_argument("--questions", type=int, default=600)
    ap.add_argument("--out-dir", type=Path)
    args = ap.parse_args(argv)
    questions = [q.question for c in load_conversations(args.data) for q in c.questions]
    questions = questions[: args.questions]
    model_dir = resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        exact = OnnxSentenceEncoder(model_dir, cache)
        graphs = {
            "exact": exact,
            "int8_per_tensor": per_tensor(exact, model_dir, cache),
            "int8_per_channel": OnnxSentenceEncoder(model_dir, cache, int8=True),
        }
        want = exact.encode(questions)
        result: dict = {
            "benchmark": "query_encoder",
            "machine": machine_info(),
            "questions": len(questions),
        }
        for name, encoder in graphs.items():
            row: dict = {
                f"ms_per_query_batch{b}": ms_per_query(encoder, questions, b) for b in (1, 4)
            }
            if name != "exact":
                cosine = (encoder.encode(questions) * want).sum(axis=1)
                row["cosine_to_exact"] = {
                    "mean": round(float(cosine.mean()), 4),
                    "p5": round(float(np.percentile(cosine, 5)), 4),
                    "min": round(float(cosine.min()), 4),
                }
            result[name] = row
    result["json"] = relpath(write_result("query_encoder", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
