"""Compressor replica group: LLMLingua-2, batched across every session and user with @serve.batch.

Two batched entry points share the model: message compression (one queue item per text) and
LightMem's sentence attention for topic segmentation (one queue item per sensory window).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ray import serve

from serve_app.pipeline.compression import (
    DEFAULT_COMPRESSOR_MODEL,
    DEFAULT_FORCE_TOKENS,
    DEFAULT_RATE,
    Compressed,
    Compressor,
    checked_rate,
)
from serve_app.profiles import BatchedGroup

logger = logging.getLogger("ray.serve")


class CompressorDeployment:
    """Serve wrapper around `Compressor`; rate and force tokens can change live too."""

    def __init__(
        self,
        model: str = DEFAULT_COMPRESSOR_MODEL,
        device: str = "cpu",
        torch_threads: int | None = None,
        rate: float = DEFAULT_RATE,
        force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
    ) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.core = Compressor(model, device)
        self._set_compression(rate, force_tokens)
        logger.info("compressor %s on %s, rate %s", model, device, rate)

    def _set_compression(self, rate: float, force_tokens: Sequence[str]) -> None:
        self.rate = checked_rate(rate)
        self.force_tokens = tuple(force_tokens)

    def reconfigure(self, config: dict) -> None:
        # Applied live by `serve deploy` with a changed user_config: no restart.
        for method in (self._compress_one, self._attend_one):
            if "max_batch_size" in config:
                method.set_max_batch_size(int(config["max_batch_size"]))
            if "batch_wait_timeout_s" in config:
                method.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        if "rate" in config or "force_tokens" in config:
            self._set_compression(
                config.get("rate", self.rate), config.get("force_tokens", self.force_tokens)
            )
        logger.info("compressor config: %s", config)

    async def info(self) -> dict:
        return {
            "model": self.core.model_name,
            "rate": self.rate,
            "force_tokens": list(self.force_tokens),
            "max_batch_size": self._compress_one._get_max_batch_size(),
            # Ray 2.60 exposes the getters with a leading underscore only.
            "batch_wait_timeout_s": self._compress_one._get_batch_wait_timeout_s(),
        }

    async def compress(self, texts: list[str]) -> list[Compressed]:
        """Each text joins the shared queue, so one batch mixes texts from many callers."""
        return list(await asyncio.gather(*(self._compress_one(t) for t in texts)))

    async def consecutive_attention(self, windows: list[list[str]]) -> list[list[float]]:
        """Per window of turns, the attention of turn i+1 to turn i (segmentation's coarse cut)."""
        return list(await asyncio.gather(*(self._attend_one(w) for w in windows)))

    async def compress_at(self, texts: list[str], rate: float) -> list[Compressed]:
        """Compress at another rate than the live one (a re-extraction job building a memory
        version with its own rate); not batched with the service's queue."""
        return await asyncio.to_thread(
            self.core.compress_batch, texts, checked_rate(rate), self.force_tokens
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _compress_one(self, texts: list[str]) -> list[Compressed]:
        # In a thread so the event loop keeps collecting the next batch meanwhile.
        return await asyncio.to_thread(
            self.core.compress_batch, texts, self.rate, self.force_tokens
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _attend_one(self, windows: list[list[str]]) -> list[list[float]]:
        return await asyncio.to_thread(self.core.consecutive_attention_batch, windows)


def build_compressor(
    group: BatchedGroup,
    model: str,
    rate: float = DEFAULT_RATE,
    force_tokens: Sequence[str] = DEFAULT_FORCE_TOKENS,
):
    """Bind the Compressor group with the profile's resources and live batching settings.

    Call only when `compressor_available(model)` holds; otherwise compression is off.
    """
    return (
        serve.deployment(CompressorDeployment)
        .options(name="Compressor", user_config=group.user_config(), **group.deployment_options())
        .bind(model, group.device, group.torch_threads, rate, list(force_tokens))
    )
