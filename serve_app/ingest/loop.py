"""The worker's background loops: run a step until it has nothing left, then wait for a wake-up
or the idle poll; a failed step is retried with exponential backoff. The intake loop and the LLM
step's loop are both one of these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from serve_app.ingest.idle import IdleFlusher
from serve_app.ingest.llm_step import LLMStep
from serve_app.ingest.processor import IngestProcessor, SessionsFailed

logger = logging.getLogger("ray.serve")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class StepLoop:
    """`step` returns True when more work is ready now (run it again at once), False when idle;
    an exception counts as a failed step (`stats["errors"]`, `stats["last_error"]`)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[bool]],
        idle_poll_s: float,
        stats: dict,
    ) -> None:
        self.name = name
        self.step = step
        self.idle_poll_s = idle_poll_s
        self.stats = stats
        self.wake = asyncio.Event()
        self.last_loop = time.monotonic()

    async def run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            self.last_loop = time.monotonic()
            try:
                again = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.stats["errors"] += 1
                self.stats["last_error"] = f"{type(e).__name__}: {e}"
                logger.exception("%s failed; retrying in %.1fs", self.name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = FIRST_BACKOFF_S
            if again:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.idle_poll_s)


class IngestLoops:
    """A worker replica's two loops: intake (`IngestProcessor`) and the LLM step (`LLMStep`),
    with the counters its readiness reports. `llm_step` is replaced when the LLM settings
    change; the loops keep running."""

    def __init__(
        self,
        processor: IngestProcessor,
        llm_step: LLMStep,
        metrics,
        idle_poll_s: float,
        idle: IdleFlusher | None = None,
    ) -> None:
        self.processor = processor
        self.llm_step = llm_step
        self.metrics = metrics  # PipelineMetrics (or anything with record(PipelineTotals))
        self.idle = idle
        self.stats = {
            "batches": 0,
            "messages": 0,
            "idle_flushes": 0,
            "errors": 0,
            "last_error": None,
        }
        self.llm_stats = {"tasks": 0, "postponed": 0, "errors": 0, "last_error": None}
        self.intake = StepLoop("ingest batch", self._intake_step, idle_poll_s, self.stats)
        self.llm = StepLoop("LLM step", self._llm_step, idle_poll_s, self.llm_stats)

    async def _intake_step(self) -> bool:
        if self.idle is not None:
            # Requests go in before the claim, so this very batch takes those sessions.
            self.stats["idle_flushes"] += await self.idle.maybe_request()
        totals = await self.processor.process_batch()
        self.metrics.record(totals)
        if totals.failed_sessions:
            raise SessionsFailed(totals.failed_sessions)
        if totals.flushes:
            self.llm.wake.set()
        if totals.did_work:
            self.stats["batches"] += 1
            self.stats["messages"] += totals.messages
        return totals.did_work

    async def _llm_step(self) -> bool:
        """Queued LLM tasks; their own not_before times pace retries against a dead LLM."""
        totals = await self.llm_step.process()
        self.metrics.record(totals.pipeline())
        if totals.did_work:
            self.llm_stats["tasks"] += totals.tasks
            self.llm_stats["postponed"] += totals.postponed
        return totals.did_work and totals.postponed < totals.tasks

    def llm_detail(self) -> dict:
        llm = self.llm_step.llm
        if llm is None:
            return {"mode": "extractive", "ok": True, "backends": [], **self.llm_stats}
        backends = llm.status()
        return {
            "mode": "llm",
            # Not an error for readiness: ingestion goes on and the work waits in PostgreSQL.
            "ok": True,
            "available": any(b["state"] != "open" for b in backends),
            "backends": backends,
            "usage": llm.usage.rows(),
            **self.llm_stats,
        }
