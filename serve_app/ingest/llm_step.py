"""The ingest worker's LLM step: queued flushes become facts and topic summaries (one LLM call
each), requested session summaries are written. No Ray: engines come in as async callables.

Each task is leased (llm_tasks_repo), the LLM is called outside any transaction, and the result
is committed in one transaction with the task's deletion, its messages' 'done' status and the
usage counters. Outcomes:
- `LLMUnavailable`: the task goes back to pending, due again after the breaker's cool-down or
  an exponential delay; the worker's intake of other messages never waits for it;
- `LLMOutputInvalid`: the task and its messages are marked failed with the error, kept, and
  queued again by `retry_failed`;
- anything else (embedder, index, PostgreSQL down): pending again after a delay.
Without an LLM (backends removed while tasks were queued) extraction tasks are turned into
extractive entries, so nothing waits for an LLM that will not come.

Entries go into the active memory version, read in the commit transaction under the
version-switch lock; the LLM is prompted with that version's prompt (a version built by a
re-extraction with its own prompt keeps extracting new messages with it). If the version
changed between the call and the commit, the task is simply run again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass

import asyncpg

from serve_app.ingest.engines import Embed, Engines, Index
from serve_app.llm.config import LLMSettings
from serve_app.llm.resilience import LLMOutputInvalid, LLMUnavailable, ResilientLLM
from serve_app.llm.summaries import SessionNote, summarize_session
from serve_app.metrics import PipelineTotals
from serve_app.model.entries import EntryContext, EntryRow
from serve_app.pipeline.extractive import extractive_rows, uses_previous
from serve_app.pipeline.facts import extract_flush, extraction_entries
from serve_app.storage.buffers_repo import BuffersRepo
from serve_app.storage.llm_tasks_repo import LLMTask, LLMTasksRepo, SourceRow
from serve_app.storage.locks import try_lock_user_shared
from serve_app.storage.postgres import Repository, active_version

logger = logging.getLogger("ray.serve")

MAX_RETRY_DELAY_S = 300.0


class _Lost(Exception):
    """The task is no longer ours (erased, or another worker took it after the lease ran out)."""


class _UserBusy(Exception):
    """The user is being erased: the erase deletes the task."""


class _VersionChanged(Exception):
    """The active memory version changed during the LLM call (maybe its prompt too)."""


@dataclass
class LLMStepTotals:
    tasks: int = 0  # tasks leased
    extracted: int = 0  # extraction tasks committed
    summaries: int = 0  # session summaries committed
    entries: int = 0
    done: int = 0  # messages whose entries now exist
    failed: int = 0  # messages marked failed (output invalid)
    postponed: int = 0  # tasks back to pending (LLM unreachable or another error)
    unavailable: int = 0  # tasks postponed because no LLM backend was reachable
    llm_calls: int = 0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0

    @property
    def did_work(self) -> bool:
        return self.tasks > 0

    def pipeline(self) -> PipelineTotals:
        """The increments the pipeline metrics export."""
        return PipelineTotals(
            entries=self.entries,
            done=self.done,
            failed=self.failed,
            llm_calls=self.llm_calls,
            llm_input_tokens=self.llm_input_tokens,
            llm_output_tokens=self.llm_output_tokens,
        )


def lease_seconds(settings: LLMSettings) -> float:
    """Longest one task can take with every retry, repair and fallback, plus a margin."""
    policy = settings.policy()
    per_backend = (1 + policy.repair_attempts) * (len(policy.backoff_s) + 1) * policy.timeout_s
    per_backend += sum(policy.backoff_s)
    return max(1, len(settings.backends)) * per_backend + 60.0


class LLMStep:
    """Queued LLM work, a few tasks at a time. No Ray in here: the engines come in as async
    callables."""

    def __init__(
        self,
        repo: Repository,
        embed: Embed,
        index: Index,
        *,
        embedding_model: str,
        llm: ResilientLLM | None,
        llm_settings: LLMSettings,
        entry_unit: str = "message_ctx",
        concurrency: int | None = None,
    ) -> None:
        self.repo = repo
        self.engines = Engines(embed, index)
        self.embedding_model = embedding_model
        self.llm = llm
        self.llm_settings = llm_settings
        self.entry_unit = entry_unit
        limit = sum(b.max_concurrency for b in llm_settings.backends) or 4
        self.concurrency = concurrency or limit
        self.lease_s = lease_seconds(llm_settings)
        self.retry_base_s = llm_settings.backoff_s[0] if llm_settings.backoff_s else 1.0

    @property
    def enabled(self) -> bool:
        return self.llm is not None

    async def process(self) -> LLMStepTotals:
        """Lease up to `concurrency` ready tasks and run them concurrently."""
        kinds = ("extract", "summary") if self.llm is not None else ("extract",)
        tasks = await LLMTasksRepo.claim(self.repo.pool, self.concurrency, self.lease_s, kinds)
        totals = LLMStepTotals(tasks=len(tasks))
        for outcome in await asyncio.gather(*(self._run(t) for t in tasks)):
            for k, v in asdict(outcome).items():
                setattr(totals, k, getattr(totals, k) + v)
        totals.tasks = len(tasks)
        return totals

    async def _run(self, task: LLMTask) -> LLMStepTotals:
        out = LLMStepTotals()
        usage = None
        try:
            if task.kind == "summary":
                usage = await self._summary(task, out)
            else:
                usage = await self._extract(task, out)
        except LLMUnavailable as e:
            delay = max(e.retry_after_s, self._delay(task))
            logger.warning(
                "LLM unavailable for %s/%s %s #%d; retry in %.1fs: %s",
                task.user_id,
                task.session_id,
                task.kind,
                task.flush_index,
                delay,
                e,
            )
            await self._postpone(task, delay, f"LLMUnavailable: {e}", e.usage)
            out.postponed += 1
            out.unavailable += 1
            usage = e.usage
        except LLMOutputInvalid as e:
            logger.error(
                "LLM output unusable for %s/%s %s #%d: %s",
                task.user_id,
                task.session_id,
                task.kind,
                task.flush_index,
                e,
            )
            async with self.repo.pool.acquire() as conn, conn.transaction():
                if await LLMTasksRepo.hold(conn, task):
                    await LLMTasksRepo.fail(conn, task, f"LLMOutputInvalid: {e}")
                    await LLMTasksRepo.add_usage(conn, task.user_id, task.session_id, e.usage)
                    out.failed += len(task.message_ids)
            usage = e.usage
        except _Lost:
            logger.info("LLM task %s no longer ours; dropped", task.key)
        except _UserBusy:
            await self._postpone(task, 1.0, "user being erased", None)
            out.postponed += 1
        except _VersionChanged as e:
            usage = e.args[0] if e.args else None
            await self._postpone(task, 0.1, "memory version switched during the call", usage)
            out.postponed += 1
        except Exception as e:
            delay = self._delay(task)
            logger.exception("LLM task %s failed; retry in %.1fs", task.key, delay)
            await self._postpone(task, delay, f"{type(e).__name__}: {e}", None)
            out.postponed += 1
        if usage is not None:
            out.llm_calls += usage.calls
            out.llm_input_tokens += usage.prompt_tokens
            out.llm_output_tokens += usage.completion_tokens
        return out

    def _delay(self, task: LLMTask) -> float:
        return min(self.retry_base_s * 2 ** max(0, task.attempts - 1), MAX_RETRY_DELAY_S)

    async def _postpone(self, task: LLMTask, delay_s: float, error: str, usage) -> None:
        try:
            async with self.repo.pool.acquire() as conn, conn.transaction():
                if await LLMTasksRepo.postpone(conn, task, delay_s, error) and usage is not None:
                    await LLMTasksRepo.add_usage(conn, task.user_id, task.session_id, usage)
        except Exception:
            # The lease runs out and the task is taken again: nothing is lost.
            logger.exception("could not postpone LLM task %s", task.key)

    # --- extraction ------------------------------------------------------------------------

    async def _extract(self, task: LLMTask, out: LLMStepTotals):
        # The only read of the task's text: the commit below builds its entries from these.
        sources = await LLMTasksRepo.source_messages(
            self.repo.pool, task.user_id, task.session_id, task.message_ids
        )
        messages = [r.message for r in sources]
        topics = {m: s.topic_index for s in task.segments for m in s.message_ids}
        usage = None
        result = None
        if self.llm is not None and sources:
            seen_version, extraction = await active_version(self.repo.pool)
            result = await extract_flush(
                self.llm,
                self.llm_settings,
                messages,
                {r.message.message_id: r.compressed for r in sources},
                extraction.get("prompt"),
            )
            usage = result.usage
            if not result.value.report.clean:
                logger.info("extraction %s repaired: %s", task.key, result.value.report)
        async with self.repo.pool.acquire() as conn, conn.transaction():
            await self._hold(conn, task)
            version, extraction = await self.repo.lock_active_version(conn)
            ctx = EntryContext(task.user_id, task.session_id, version, self.embedding_model)
            if result is None:
                unit = extraction.get("entry_unit") or self.entry_unit
                rows = await self._extractive_rows(conn, task, sources, topics, ctx, unit)
            else:
                if version != seen_version:
                    raise _VersionChanged(usage)
                rows = extraction_entries(
                    result.value,
                    ctx,
                    flush_index=task.flush_index,
                    messages=messages,
                    topics=topics,
                    backend=result.reply.backend,
                    model=result.reply.model,
                )
            await self.engines.write_entries(conn, rows, version)
            done = await BuffersRepo.mark_done(
                conn, task.user_id, task.session_id, task.message_ids, version
            )
            if usage is not None:
                await LLMTasksRepo.add_usage(conn, task.user_id, task.session_id, usage)
            await LLMTasksRepo.delete(conn, task)
        out.extracted += 1
        out.entries += len(rows)
        out.done += done
        return usage

    @staticmethod
    async def _hold(conn: asyncpg.Connection, task: LLMTask) -> None:
        if not await LLMTasksRepo.hold(conn, task):
            raise _Lost()
        if not await try_lock_user_shared(conn, task.user_id):
            raise _UserBusy()

    async def _extractive_rows(
        self,
        conn: asyncpg.Connection,
        task: LLMTask,
        sources: list[SourceRow],
        topics: dict[str, int],
        ctx: EntryContext,
        unit: str,
    ) -> list[EntryRow]:
        """Without an LLM (backends removed while the task waited): extractive entries."""
        messages = [r.message for r in sources]
        if not messages:
            return []
        prev = None
        if uses_previous(unit):
            previous = await self.repo.previous_messages(
                conn, [(task.user_id, task.session_id, messages[0].seq)]
            )
            prev = previous.get((task.user_id, task.session_id))
        return extractive_rows(
            [messages],
            prev,
            ctx,
            unit=unit,
            flush_index=task.flush_index,
            topics=topics,
        )

    # --- session summary -------------------------------------------------------------------

    async def _summary(self, task: LLMTask, out: LLMStepTotals):
        assert self.llm is not None
        pool = self.repo.pool
        notes = [
            SessionNote(
                ts=r["ts"],
                text=r["text"],
                kind=r["kind"],
                importance=r["importance"] if r["importance"] is not None else 0.5,
            )
            for r in await LLMTasksRepo.session_notes(pool, task.user_id, task.session_id)
        ]
        if not notes:
            # Nothing extracted (yet): no call, no summary; a later request can make one.
            async with pool.acquire() as conn, conn.transaction():
                await self._hold(conn, task)
                await LLMTasksRepo.delete(conn, task)
            return None
        participants = await LLMTasksRepo.participants(pool, task.user_id, task.session_id)
        result = await summarize_session(
            self.llm,
            notes,
            participants=participants,
            max_tokens=self.llm_settings.summary_max_tokens,
            temperature=self.llm_settings.temperature,
        )
        s = result.value
        data = {
            "title": s.title,
            "summary": s.summary,
            "topics": list(s.topics),
            "participants": list(s.participants),
            "key_events": [
                {"text": e.text, "date": e.date.isoformat() if e.date else None}
                for e in s.key_events
            ],
            "open_items": list(s.open_items),
            "notes_used": len(notes),
            "llm_backend": result.reply.backend,
            "llm_model": result.reply.model,
        }
        async with pool.acquire() as conn, conn.transaction():
            await self._hold(conn, task)
            await LLMTasksRepo.store_summary(conn, task.user_id, task.session_id, s.as_text(), data)
            await LLMTasksRepo.add_usage(conn, task.user_id, task.session_id, result.usage)
            await LLMTasksRepo.delete(conn, task)
        out.summaries += 1
        return result.usage
