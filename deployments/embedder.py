"""Embedder replica group: sentence-transformers, batched across all callers with @serve.batch."""

from __future__ import annotations

import asyncio
import logging
import os

import numpy as np
from ray import serve

from serve_app.encoding.torch_encoder import Embedder
from serve_app.profiles import BatchedGroup

logger = logging.getLogger("ray.serve")


class EmbedderDeployment:
    """Serve wrapper around `Embedder`: every text from every caller joins one batching queue."""

    def __init__(self, model: str, device: str, torch_threads: int | None) -> None:
        self.core = Embedder(model, device, torch_threads)
        self.batching: dict = {}

    def reconfigure(self, config: dict) -> None:
        # Applied live by `serve deploy` with a changed user_config: no restart.
        if "max_batch_size" in config:
            self._encode_one.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self._encode_one.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        self.batching = dict(config)
        logger.info("embedder batching: %s", config)

    async def info(self) -> dict:
        return {
            "pid": os.getpid(),  # lets a test tell a live reconfigure from a restart
            "model": self.core.model_name,
            "dim": self.core.dim,
            **self.batching,
        }

    async def embed(self, texts: list[str]) -> list[np.ndarray]:
        return list(await asyncio.gather(*(self._encode_one(t) for t in texts)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _encode_one(self, texts: list[str]) -> list[np.ndarray]:
        # In a thread so the event loop keeps collecting the next batch meanwhile.
        vectors = await asyncio.to_thread(self.core.encode, texts)
        return list(vectors)


def build_embedder(group: BatchedGroup, model: str):
    return (
        serve.deployment(EmbedderDeployment)
        .options(name="Embedder", user_config=group.user_config(), **group.deployment_options())
        .bind(model, group.device, group.torch_threads)
    )
