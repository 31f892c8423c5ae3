"""Does a Qdrant Edge search let other Python threads run? An event loop can hand blocking work
to a worker thread only with profit when that work releases the GIL.

One Edge shard with --points random 384-d vectors of one user (the embedded store's own class,
serve_app/storage/edge_vectors.py); then the count a pure-Python loop reaches in one second
alone, beside a thread running back-to-back Edge searches (100 candidates, as a hybrid search),
and beside a thread running numpy's matrix-vector product over the same vectors; and the time
of one search each way, alone and from two threads at once. Prints JSON.

    python -m benchmarks.edge_gil [--points 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import machine_info, relpath, write_result
from serve_app.storage.edge_vectors import EdgeVectorStore
from serve_app.storage.vectors import VectorPoint

DIM = 384
CANDIDATES = 100


def python_progress(seconds: float = 1.0) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


Work = Callable[[], Awaitable[object]]


def beside(work: Work) -> int:
    """python_progress() while another thread repeats `work` on its own event loop."""
    stop = threading.Event()

    async def repeat() -> None:
        while not stop.is_set():
            await work()

    t = threading.Thread(target=asyncio.run, args=(repeat(),))
    t.start()
    try:
        return python_progress()
    finally:
        stop.set()
        t.join()


def ms_each(work: Work, threads: int, n: int = 400) -> float:
    """Wall time per call of `work`, n calls split over `threads` threads (one loop each)."""

    async def repeat() -> None:
        for _ in range(n // threads):
            await work()

    pool = [threading.Thread(target=asyncio.run, args=(repeat(),)) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return round((time.perf_counter() - t0) / n * 1000, 3)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--out-dir", type=Path)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.points, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        # The engine itself: without users' matrices (which are the numpy product below).
        store = EdgeVectorStore(tmp, "gil", DIM, cache_points=0)
        points = [VectorPoint(str(uuid.uuid4()), v, "u", "s", now, "a") for v in vectors]
        for i in range(0, len(points), 1000):
            asyncio.run(store.upsert(points[i : i + 1000]))
        query = vectors[0]

        async def edge_search() -> object:
            return await store.search("u", query, CANDIDATES)

        async def numpy_search() -> object:
            scores = vectors @ query
            return np.argpartition(-scores, CANDIDATES)[:CANDIDATES]

        alone = python_progress()
        result = {
            "benchmark": "edge_gil",
            "machine": machine_info(),
            "points": args.points,
            "python_progress_vs_alone": {
                "beside_edge_searches": round(beside(edge_search) / alone, 2),
                "beside_numpy_matvec": round(beside(numpy_search) / alone, 2),
            },
            "ms_per_search": {
                "edge_1_thread": ms_each(edge_search, 1),
                "edge_2_threads": ms_each(edge_search, 2),
                "numpy_1_thread": ms_each(numpy_search, 1),
                "numpy_2_threads": ms_each(numpy_search, 2),
            },
        }
        asyncio.run(store.close())
    result["json"] = relpath(write_result("edge_gil", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
