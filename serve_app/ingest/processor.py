"""One ingest batch: the LightMem pipeline from stored messages to indexed memory entries.

One batch is one PostgreSQL transaction:
1. lock up to `worker_batch_sessions` sessions with pending messages or an outstanding flush
   (their `session_buffers` rows, FOR UPDATE SKIP LOCKED: replicas never share a session);
2. read each session's pending messages in seq order (the only read of their text: the buffers
   keep every field entries need) and its saved buffer state;
3. intake (pipeline/intake.py): compress the new messages through the Compressor group when on
   (original kept beside); with `cut_on_entry_text`, and neither compression nor LLM, each
   message carries the index text of its extractive entry (the active version's entry unit,
   read without a lock: the vectors are keyed by text, so a unit changed meanwhile only
   costs embedding the entries again);
4. feed the buffers; the sensory buffer is cut into topics with the embedder (and the
   compressor's attention when on); full short-term buffers flush, and so does everything
   when a flush was requested;
5. without an LLM: extractive entries of every flushed buffer (pipeline/extractive.py), from
   the ORIGINAL text (it keeps the facts), indexed under vectors the cut computed for their
   index texts, the others embedded in one call, and written - into the active
   memory version, read under the version-switch lock (a switch waits for this commit), with
   that version's entry unit; with an LLM: each flushed buffer is queued as an extraction task
   (ingest/llm_step.py runs them);
6. mark messages buffered / done, save the buffer state, add the session's token counters,
   clear the satisfied flush request (queueing the session summary it asked for) - all before
   the commit.
A crash anywhere rolls all of it back; entry ids are deterministic, so the retry overwrites the
same vector points. Nothing is lost, nothing is processed twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from serve_app.ingest.engines import Attend, Compress, Embed, Engines, Index
from serve_app.metrics import PipelineTotals
from serve_app.model.entries import EntryContext, EntryRow
from serve_app.model.messages import StoredMessage
from serve_app.pipeline.buffers import BufferConfig, SessionBuffers, ShortTermFlush
from serve_app.pipeline.extractive import extractive_rows, uses_previous
from serve_app.pipeline.intake import (
    SEGMENT_CACHE_SIZE,
    Cutter,
    Intook,
    intake,
    stored_message,
)
from serve_app.pipeline.segmentation import SegmentationConfig
from serve_app.settings import Settings
from serve_app.storage.buffers_repo import (
    BufferedUpdate,
    BuffersRepo,
    ClaimedSession,
    SessionCounters,
)
from serve_app.storage.llm_tasks_repo import LLMTasksRepo, TaskSegment
from serve_app.storage.locks import try_lock_user_shared
from serve_app.storage.postgres import Repository, active_version

logger = logging.getLogger("ray.serve")


class SessionsFailed(RuntimeError):
    """Some sessions of a committed batch failed (their attempts are counted; see the log)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} session(s) failed, see log")
        self.count = count


@dataclass
class _SessionWork:
    claim: ClaimedSession
    state: SessionBuffers
    fresh: list[StoredMessage]  # pending messages new to the buffers, in seq order
    stale: list[StoredMessage]  # pending but at or below the state's last_seq (never expected)
    may_flush: bool  # a flush is requested and this batch reads every message it covers
    intake: list[Intook] = field(default_factory=list)
    flushes: list[ShortTermFlush] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # the cut's, by index text
    segments: int = 0
    error: BaseException | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.claim.user_id, self.claim.session_id


class IngestProcessor:
    """One batch at a time. No Ray in here: the engines come in as async callables."""

    def __init__(
        self,
        repo: Repository,
        embed: Embed,
        index: Index,
        settings: Settings,
        embedding_model: str,
        *,
        compress: Compress | None = None,
        attend: Attend | None = None,
        llm_queue: bool = False,
    ) -> None:
        self.repo = repo
        self.engines = Engines(embed, index, compress, attend)
        # True: flushed buffers become LLM extraction tasks instead of extractive entries.
        self.llm_queue = llm_queue
        self.settings = settings
        self.embedding_model = embedding_model
        self.buffer_config = BufferConfig(
            settings.sensory_max_tokens, settings.short_term_max_tokens
        )
        # Room for every text of a batch (its messages and the held ones cut again), so a
        # vector the cut made is still cached when its session's flushes are taken.
        cache = max(SEGMENT_CACHE_SIZE, 8 * settings.worker_batch_messages)
        self.cut = Cutter(
            embed,
            SegmentationConfig.from_settings(settings),
            attend,
            cache,
            SegmentationConfig.from_settings(settings, entry_texts=True),
        )

    @property
    def compression_on(self) -> bool:
        return self.engines.compress is not None

    async def process_batch(self) -> PipelineTotals:
        """Process up to one batch; the totals say what was committed."""
        work: list[_SessionWork] = []
        try:
            async with self.repo.pool.acquire() as conn, conn.transaction():
                claims = await BuffersRepo.claim_sessions(conn, self.settings.worker_batch_sessions)
                if not claims:
                    return PipelineTotals()
                work = await self._load(conn, await self._lockable(conn, claims))
                return await self._process(conn, work)
        except Exception as e:
            # The transaction rolled back; count the attempt outside it.
            await self._record_failure(work, e)
            raise

    # --- steps ---------------------------------------------------------------------------

    @staticmethod
    async def _lockable(
        conn: asyncpg.Connection, claims: list[ClaimedSession]
    ) -> list[ClaimedSession]:
        # A user being erased holds the exclusive lock: skip their sessions, the erase
        # deletes them when this transaction ends.
        ok = {u for u in sorted({c.user_id for c in claims}) if await try_lock_user_shared(conn, u)}
        return [c for c in claims if c.user_id in ok]

    async def _load(
        self, conn: asyncpg.Connection, claims: list[ClaimedSession]
    ) -> list[_SessionWork]:
        budget = self.settings.worker_batch_messages
        work = []
        for claim in claims:
            if budget <= 0:
                break  # the session stays for the next batch
            messages = await BuffersRepo.pending_messages(
                conn, claim.user_id, claim.session_id, budget
            )
            drained = len(messages) < budget
            budget -= len(messages)
            state = SessionBuffers.from_json(claim.state, self.buffer_config)
            covered = drained or (
                claim.flush_upto is not None and messages[-1].seq >= claim.flush_upto
            )
            work.append(
                _SessionWork(
                    claim=claim,
                    state=state,
                    fresh=[m for m in messages if m.seq > state.last_seq],
                    stale=[m for m in messages if m.seq <= state.last_seq],
                    may_flush=claim.flush_upto is not None and covered,
                )
            )
        return work

    async def _process(self, conn: asyncpg.Connection, work: list[_SessionWork]) -> PipelineTotals:
        # One compressor call for the batch: the Compressor batches across sessions.
        unit, previous = await self._index_context(conn, work)
        intook = iter(
            await intake(
                [m for w in work for m in w.fresh],
                self.engines.compress,
                unit=unit,
                previous=previous,
            )
        )
        for w in work:
            w.intake = [next(intook) for _ in w.fresh]
        await self._prefetch(work)
        await asyncio.gather(*(self._advance(w) for w in work))
        ok = [w for w in work if w.error is None]
        totals = PipelineTotals(failed_sessions=len(work) - len(ok))
        for w in work:
            if w.error is not None:
                logger.error(
                    "session %s/%s failed: %r", w.claim.user_id, w.claim.session_id, w.error
                )
                await BuffersRepo.record_attempt(
                    conn,
                    *w.key,
                    [m.message_id for m in w.fresh],
                    f"{type(w.error).__name__}: {w.error}",
                    self.settings.worker_max_attempts,
                )

        rows, version = await self._entries(conn, ok)
        known = {t: v for w in ok for t, v in w.vectors.items()}
        await self.engines.write_entries(conn, rows, version, known)
        for w in ok:
            await self._save(conn, w, totals, version)
        totals.entries = len(rows)
        return totals

    async def _prefetch(self, work: list[_SessionWork]) -> None:
        """The batch's texts for its cuts in one embed call; a failure is left to the cuts,
        which embed what is missing and fail only their own session."""
        try:
            await self.cut.prefetch([i.buffered for w in work for i in w.intake])
        except Exception as e:
            logger.warning("embedding the batch ahead of its cuts failed: %r", e)

    async def _advance(self, w: _SessionWork) -> None:
        """Feed the session's buffers; a failure stays with this session."""
        topics = w.state.next_topic
        try:
            w.flushes = await w.state.add_async([i.buffered for i in w.intake], self.cut)
            if w.may_flush:
                w.flushes += await w.state.flush_async(self.cut)
        except Exception as e:
            w.error = e
            return
        w.segments = w.state.next_topic - topics
        # Taken before any other await: concurrent sessions' cuts may evict from the cache.
        w.vectors = self.cut.vectors.peek(
            [m.index_text for f in w.flushes for m in f.messages if m.index_text is not None]
        )

    async def _index_context(
        self, conn: asyncpg.Connection, work: list[_SessionWork]
    ) -> tuple[str | None, dict[tuple[str, str], StoredMessage]]:
        """The entry unit intake gives index texts for (None: it gives none) and each session's
        message before its fresh ones: the last one its buffers hold, else the stored one."""
        if (
            not self.settings.cut_on_entry_text
            or self.llm_queue
            or self.compression_on
            or not any(w.fresh for w in work)
        ):
            return None, {}
        _, extraction = await active_version(conn)
        unit = self._unit(extraction)
        previous: dict[tuple[str, str], StoredMessage] = {}
        for w in work:
            if not w.fresh:
                continue
            held = w.state.held()
            if held:
                previous[w.key] = stored_message(*w.key, held[-1])
            elif uses_previous(unit):
                previous.update(await self.repo.previous_messages(conn, [(*w.key, w.fresh[0].seq)]))
        return unit, previous

    def _unit(self, extraction: dict) -> str:
        return extraction.get("entry_unit") or self.settings.entry_unit

    async def _entries(
        self, conn: asyncpg.Connection, work: list[_SessionWork]
    ) -> tuple[list[EntryRow], int]:
        """The entries of the flushed buffers and the memory version they belong to."""
        if self.llm_queue:
            for w in work:
                for flush in w.flushes:
                    segments = [
                        TaskSegment(s.topic_index, tuple(m.message_id for m in s.messages))
                        for s in flush.segments
                    ]
                    await LLMTasksRepo.enqueue_extract(conn, *w.key, flush.flush_index, segments)
            return [], 0
        if not any(w.flushes for w in work):
            return [], 0
        version, extraction = await self.repo.lock_active_version(conn)
        unit = self._unit(extraction)
        rows: list[EntryRow] = []
        for w in work:
            flushed = [m for f in w.flushes for m in f.messages]
            if not flushed:
                continue
            user_id, session_id = w.key
            ctx = EntryContext(user_id, session_id, version, self.embedding_model)
            prev = None
            if uses_previous(unit):
                previous = await self.repo.previous_messages(
                    conn, [(user_id, session_id, flushed[0].seq)]
                )
                prev = previous.get(w.key)
            for flush in w.flushes:
                groups = [
                    [stored_message(user_id, session_id, m) for m in s.messages]
                    for s in flush.segments
                ]
                rows += extractive_rows(
                    groups,
                    prev,
                    ctx,
                    unit=unit,
                    flush_index=flush.flush_index,
                    topics=flush.topics(),
                )
                prev = next((g[-1] for g in reversed(groups) if g), prev)
        return rows, version

    async def _save(
        self, conn: asyncpg.Connection, w: _SessionWork, totals: PipelineTotals, version: int
    ) -> None:
        user_id, session_id = w.key
        updates = [
            BufferedUpdate(i.buffered.message_id, i.compressed, i.raw_tokens, i.buffered.tokens)
            for i in w.intake
        ]
        if updates:
            await BuffersRepo.mark_buffered(conn, user_id, session_id, updates)
        # With the LLM, flushed messages stay 'buffered' until their extraction task commits.
        done = [] if self.llm_queue else [m.message_id for f in w.flushes for m in f.messages]
        if done:
            await BuffersRepo.mark_done(conn, user_id, session_id, done, version)
        if w.stale:
            # Only a state edited by hand gets here: say so rather than loop on them.
            await BuffersRepo.mark_failed(
                conn,
                user_id,
                session_id,
                [m.message_id for m in w.stale],
                f"seq at or below the buffer state's last_seq {w.state.last_seq}",
            )
        held = w.state.held()
        await BuffersRepo.save_state(
            conn,
            user_id,
            session_id,
            w.state.to_json(),
            len(held),
            sum(m.tokens for m in held),
        )
        counters = SessionCounters(
            raw_tokens=sum(u.raw_tokens for u in updates),
            compressed_tokens=sum(u.compressed_tokens for u in updates),
            segments=w.segments,
            flushes=len(w.flushes),
        )
        await BuffersRepo.add_counters(conn, user_id, session_id, counters)
        if w.may_flush:
            summarize = await BuffersRepo.clear_flush(conn, user_id, session_id, w.claim.flush_upto)
            if summarize and self.llm_queue:
                await LLMTasksRepo.enqueue_summary(conn, user_id, session_id)
        totals.sessions += 1
        totals.messages += len(updates)
        totals.raw_tokens += counters.raw_tokens
        totals.compressed_tokens += counters.compressed_tokens
        totals.segments += counters.segments
        totals.flushes += counters.flushes
        totals.done += len(done)
        totals.failed += len(w.stale)

    async def _record_failure(self, work: list[_SessionWork], error: Exception) -> None:
        try:
            for w in work:
                if w.fresh:
                    await BuffersRepo.record_attempt(
                        self.repo.pool,
                        *w.key,
                        [m.message_id for m in w.fresh],
                        f"{type(error).__name__}: {error}",
                        self.settings.worker_max_attempts,
                    )
        except Exception:
            logger.exception("could not record the failure of an ingest batch")
