"""Resident memory of the ONNX query encoder over many batches of varied shapes, with and
without ONNX Runtime's CPU memory arena.

Each configuration runs in a fresh process (RSS is per process): it encodes `--batches` random
batches (1 to 32 texts of 3 to 30 words, mostly small batches, as concurrent queries arrive),
hands the freed heap back every 10 batches as the MemoryIndex replica does every 10 s, and
samples RSS every 100 batches. Speed is timed apart: both sessions in one process, taking turns
over the same batches. Prints JSON; writes benchmarks/results/encoder_memory.json.

    python -m benchmarks.encoder_memory [--batches 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info, write_result

SIZES = (1, 1, 1, 2, 2, 3, 4, 6, 8, 12, 16, 32)


def batches(n: int, seed: int) -> list[list[str]]:
    # Words of the project's README: numbers, names and code make token counts vary widely.
    words = (Path(__file__).resolve().parents[1] / "README.md").read_text().split()
    rng = random.Random(seed)
    return [
        [" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(rng.choice(SIZES))]
        for _ in range(n)
    ]


def measure(memory_arena: bool, n: int, seed: int, cache_dir: Path) -> dict[str, Any]:
    """In this process: RSS (MB) before the first batch, then every 100 batches and at the end."""
    import psutil

    from serve_app.encoding.heap import release_freed_heap
    from serve_app.encoding.onnx_encoder import OnnxSentenceEncoder

    encoder = OnnxSentenceEncoder(_model(), cache_dir, 1, memory_arena=memory_arena)
    proc = psutil.Process()
    rss = [round(proc.memory_info().rss / 2**20, 1)]
    texts = 0
    took = 0.0
    for i, batch in enumerate(batches(n, seed), 1):
        t0 = time.perf_counter()
        encoder.encode(batch)
        took += time.perf_counter() - t0
        texts += len(batch)
        if i % 10 == 0:
            release_freed_heap()
        if i % 100 == 0 or i == n:
            rss.append(round(proc.memory_info().rss / 2**20, 1))
    return {
        "memory_arena": memory_arena,
        "rss_mb": rss,
        "growth_after_first_100_mb": round(rss[-1] - rss[min(1, len(rss) - 1)], 1),
        "texts": texts,
        "ms_per_text": round(1000 * took / texts, 3),
    }


def speed(n: int, seed: int, cache_dir: Path, rounds: int = 3) -> dict[str, list[float]]:
    """ms per text with and without the arena, alternating over the same batches in one
    process, so both see the same machine load."""
    from serve_app.encoding.onnx_encoder import OnnxSentenceEncoder

    model = _model()
    encoders = {
        arena: OnnxSentenceEncoder(model, cache_dir, 1, memory_arena=arena)
        for arena in (True, False)
    }
    work = batches(n, seed)
    texts = sum(len(b) for b in work)
    out: dict[str, list[float]] = {"arena_on": [], "arena_off": []}
    for _ in range(rounds):
        for arena, encoder in encoders.items():
            t0 = time.perf_counter()
            for batch in work:
                encoder.encode(batch)
            took = time.perf_counter() - t0
            out["arena_on" if arena else "arena_off"].append(round(1000 * took / texts, 3))
    return out


def _model() -> Path:
    from serve_app.settings import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model

    return Path(resolve_embedding_model(DEFAULT_EMBEDDING_MODEL))


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed-batches", type=int, default=300, help="batches per timed round")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        body = measure(args.child == "on", args.batches, args.seed, args.cache_dir)
        print(json.dumps(body))
        return body

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="encoder-memory-") as cache:
        # The graph is exported here, so each measured process only loads it.
        runs["ms_per_text"] = speed(args.speed_batches, args.seed, Path(cache))
        for arena in ("on", "off"):
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.encoder_memory", "--child", arena,
                 "--batches", str(args.batches), "--seed", str(args.seed), "--cache-dir", cache],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[f"arena_{arena}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    config = {"batches": args.batches, "speed_batches": args.speed_batches, "seed": args.seed}
    result = {"config": config, "machine": machine_info()}
    result.update(runs)
    out = write_result("encoder_memory", result, args.out_dir or RESULTS_DIR)
    print(json.dumps({**runs, "written": str(out)}, indent=2))
    return result


if __name__ == "__main__":
    main()
