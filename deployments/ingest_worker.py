"""IngestWorker: the Serve shell around the ingestion pipeline (serve_app/ingest/).

Two loops run beside each other in every replica: intake (`IngestProcessor`: one PostgreSQL
transaction per batch, from stored messages to buffers and extractive entries or queued LLM
tasks) and the LLM step (`LLMStep`: queued tasks to facts and summaries). An LLM outage never
stops intake: its tasks wait in PostgreSQL (messages stay 'buffered') until a backend answers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from deployments.apps import sibling_memory_index
from deployments.handles import direct
from serve_app.api.readiness import compression_without_compressor
from serve_app.ingest.idle import IdleFlusher
from serve_app.ingest.llm_step import LLMStep
from serve_app.ingest.loop import IngestLoops
from serve_app.ingest.processor import IngestProcessor
from serve_app.llm.config import LLMSettings
from serve_app.pipeline.compression import Compressed
from serve_app.profiles import GroupResources
from serve_app.settings import Settings
from serve_app.storage.buffers_repo import BuffersRepo
from serve_app.storage.llm_tasks_repo import LLMTasksRepo
from serve_app.storage.postgres import Repository, create_pool
from serve_app.storage.vectors import VectorPoint

logger = logging.getLogger("ray.serve")

__all__ = ["IngestWorkerDeployment", "build_worker"]


class IngestWorkerDeployment:
    async def __init__(
        self,
        settings_env: dict,
        embedder,
        compressor=None,
        compression: dict | None = None,
        profile: str = "local",
        llm=None,
        memory_index=None,
    ) -> None:
        from deployments.metrics import serve_pipeline_metrics
        from serve_app.profiles import get_profile

        self.settings = Settings(**settings_env)
        self.profile = get_profile(profile)
        self.llm_handle = llm  # the in-cluster LLM deployment (profile backend vllm) or None
        self.embedder = direct(embedder)
        self.memory_index = direct(memory_index or sibling_memory_index())
        self.compressor = direct(compressor)
        self.compression = compression or {
            "enabled": compressor is not None,
            "reason": "no compression status given",
        }
        self.pool = await create_pool(
            self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
        )
        self.embedding_model = (await self.embedder.info.remote())["model"]
        self.processor = IngestProcessor(
            Repository(self.pool),
            self._embed,
            self._index,
            self.settings,
            self.embedding_model,
            compress=self._compress if compressor is not None else None,
            attend=self._attend if compressor is not None else None,
        )
        self.metrics = serve_pipeline_metrics(profile, compressor is not None)
        logger.info(
            "ingest worker: compression %s (%s)",
            "on" if compressor is not None else "off",
            self.compression.get("reason"),
        )
        self.loops = IngestLoops(
            self.processor,
            self._llm_step(self._env_llm_settings()),
            self.metrics,
            self.settings.worker_idle_poll_s,
            IdleFlusher(
                lambda idle_s: BuffersRepo.request_idle_flushes(self.pool, idle_s),
                self.settings.idle_flush_s,
            ),
        )
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self.loops.intake.run())
        self._llm_task = loop.create_task(self.loops.llm.run())

    # --- LLM configuration ---------------------------------------------------------------------

    def _env_llm_settings(self) -> LLMSettings:
        from serve_app.llm.config import with_profile_backend

        return with_profile_backend(self.settings.llm, self.profile.llm)

    def _llm_step(self, llm_settings: LLMSettings) -> LLMStep:
        """Build the backends; flushes go to the LLM queue exactly when some are configured."""
        from serve_app.llm.config import build_resilient_llm

        vllm = None
        if self.llm_handle is not None:
            from deployments.llm_server import ServeLLMBackend

            vllm = ServeLLMBackend(self.llm_handle, model=self.profile.llm.model or "")
        self.llm = build_resilient_llm(llm_settings, vllm_backend=vllm)
        self.llm_settings = llm_settings
        step = LLMStep(
            self.processor.repo,
            self._embed,
            self._index,
            embedding_model=self.embedding_model,
            llm=self.llm,
            llm_settings=llm_settings,
            entry_unit=self.settings.entry_unit,
        )
        self.processor.llm_queue = self.llm is not None
        logger.info(
            "ingest worker: LLM %s",
            [b.label for b in llm_settings.backends] if self.llm else "off (extractive)",
        )
        return step

    async def reconfigure(self, user_config: dict) -> None:
        """Serve `user_config` {"llm": LLMSettings as JSON, or null for the environment's}:
        change LLM backends live, without restarting the replica."""
        if "llm" not in (user_config or {}):
            return
        value = user_config["llm"]
        self.loops.llm_step = self._llm_step(
            self._env_llm_settings() if value is None else LLMSettings.model_validate(value)
        )
        self.loops.llm.wake.set()

    # --- engines (handle calls) and loop steps ---------------------------------------------------

    async def _embed(self, texts: list[str]):
        return await self.embedder.embed.remote(texts)

    async def _index(self, points: list[VectorPoint], memory_version: int) -> None:
        await self.memory_index.index.remote(points, memory_version)

    async def _compress(self, texts: list[str]) -> list[Compressed]:
        return await self.compressor.compress.remote(texts)

    async def _attend(self, windows: list[list[str]]) -> list[list[float]]:
        return await self.compressor.consecutive_attention.remote(windows)

    # --- requests --------------------------------------------------------------------------------

    async def kick(self) -> None:
        """New messages were stored: look now instead of at the next poll."""
        self.loops.intake.wake.set()

    async def flush(self, user_id: str, session_id: str, summarize: bool = False) -> int | None:
        """Durably ask for the session's buffered messages to become memories, and wake up.

        `summarize`: the session ended (the client's flush: true, not a flush implied by
        wait): with an LLM the session summary is written once its facts are. Returns the last
        seq the flush covers, or None for an unknown session. Any replica honours the request
        (it lives in PostgreSQL), also after a restart.
        """
        upto = await BuffersRepo.request_flush(self.pool, user_id, session_id, summarize=summarize)
        self.loops.intake.wake.set()
        return upto

    async def summarize(self, user_id: str, session_id: str) -> dict | None:
        """Ask for the session summary: flushes what is buffered, extracts it, then summarises
        every fact and topic of the session (POST /v1/sessions/{id}/summary). None for an
        unknown session; {"queued": False, "reason"} without an LLM."""
        if self.llm is None:
            return {"queued": False, "reason": "no LLM backend configured (extractive mode)"}
        upto = await BuffersRepo.request_flush(self.pool, user_id, session_id, summarize=True)
        if upto is None:
            return None
        self.loops.intake.wake.set()
        return {"queued": True, "flush_upto_seq": upto}

    async def retry_failed(self, user_id: str, session_id: str) -> dict | None:
        """Queue the session's failed LLM work again (POST /v1/sessions/{id}/retry).
        Returns {"tasks", "messages"} put back, or None for an unknown session."""
        out = await LLMTasksRepo.retry_failed(self.pool, user_id, session_id)
        self.loops.llm.wake.set()
        return out

    async def extraction_config(self) -> dict:
        """What the service extracts with now, for a re-extraction job's defaults and the
        Ingress's checks: {"llm_settings": LLMSettings (backends with their credentials; stays
        inside the cluster), "compression": {"enabled", "model", "rate", ...}, "entry_unit",
        "sensory_max_tokens", "short_term_max_tokens"}."""
        return {
            "llm_settings": self.llm_settings,
            "compression": dict(self.compression),
            "entry_unit": self.settings.entry_unit,
            "sensory_max_tokens": self.settings.sensory_max_tokens,
            "short_term_max_tokens": self.settings.short_term_max_tokens,
        }

    # --- health ----------------------------------------------------------------------------------

    async def _compression_detail(self) -> dict:
        detail = dict(self.compression)
        if self.compressor is None:
            return compression_without_compressor(detail)
        try:
            info = await asyncio.wait_for(self.compressor.info.remote(), timeout=5)
            return {**detail, "ok": True, "replica": info}
        except Exception as e:
            return {**detail, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}

    async def ready(self) -> dict:
        for task in (self._task, self._llm_task):
            if task.done():
                raise RuntimeError(f"ingest loop stopped: {task.exception()!r}")
        return {
            **self.loops.stats,
            "seconds_since_loop": round(time.monotonic() - self.loops.intake.last_loop, 3),
            "totals": vars(self.metrics.totals),
            "compression": await self._compression_detail(),
            "llm": self.loops.llm_detail(),
        }

    def check_health(self) -> None:
        # Serve restarts the replica if its loop died.
        if self._task.done() or self._llm_task.done():
            raise RuntimeError("ingest loop stopped")


def build_worker(group: GroupResources, *args, **kwargs):
    """Bind the IngestWorker group with IngestWorkerDeployment's arguments: `compressor` is the
    Compressor handle, None when off; `llm` the bound LLM deployment when the profile hosts
    vLLM, else None."""
    from ray import serve

    return (
        serve.deployment(IngestWorkerDeployment)
        .options(name="IngestWorker", **group.deployment_options())
        .bind(*args, **kwargs)
    )
