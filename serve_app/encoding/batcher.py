"""Concurrent callers' texts encoded together, off the event loop, with a small vector cache.

One encode runs at a time in a worker thread; texts that arrive meanwhile wait and go together
in the next call, so batches grow with load and a lone query pays no batching wait. Repeated
texts (an agent asking the same thing again) come from an LRU of recent vectors.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

Encode = Callable[[Sequence[str]], np.ndarray]


class BatchingEncoder:
    def __init__(self, encode: Encode, max_batch: int = 32, cache_size: int = 1024) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.cache_size = cache_size
        # An OrderedDict is a bounded LRU in a few lines; no async-aware cache library needed.
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._waiting: list[tuple[str, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.stats = {"texts": 0, "cache_hits": 0, "batches": 0}

    async def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        out: list[np.ndarray | asyncio.Future] = []
        for text in texts:
            self.stats["texts"] += 1
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                self.stats["cache_hits"] += 1
                out.append(hit)
                continue
            future = loop.create_future()
            self._waiting.append((text, future))
            out.append(future)
        if self._waiting and (self._runner is None or self._runner.done()):
            self._runner = asyncio.create_task(self._drain())
        return [await v if isinstance(v, asyncio.Future) else v for v in out]

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            unique = list(dict.fromkeys(text for text, _ in batch))
            try:
                vectors = await asyncio.to_thread(self._encode, unique)
            except Exception as exc:  # every waiter sees the failure, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats["batches"] += 1
            by_text = dict(zip(unique, vectors, strict=True))
            for text, vector in by_text.items():
                self._remember(text, vector)
            for text, future in batch:
                if not future.done():
                    future.set_result(by_text[text])

    def _remember(self, text: str, vector: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
