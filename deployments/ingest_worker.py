"""Ingest worker: the LightMem pipeline from stored messages to indexed memory entries.

One batch is one PostgreSQL transaction:
1. lock up to `worker_batch_sessions` sessions with pending messages or an outstanding flush
   (their `session_buffers` rows, FOR UPDATE SKIP LOCKED: replicas never share a session);
2. read each session's pending messages in seq order and its saved buffer state;
3. compress the new messages through the Compressor group (when on; original kept beside);
4. feed the buffers; the sensory buffer is cut into topics with the embedder (and the
   compressor's attention when on); full short-term buffers flush, and so does everything
   when a flush was requested;
5. without an LLM: build extractive entries from every flushed buffer, from the ORIGINAL
   text (it keeps the facts), embed them, write vectors, write entries - into the active
   memory version, read under the version-switch lock (a switch waits for this commit), with
   that version's entry unit; with an LLM: queue each flushed buffer as an extraction task
   (serve_app/llm_construction.py runs them);
6. mark messages buffered / done, save the buffer state, add the session's token counters,
   clear the satisfied flush request (queueing the session summary it asked for) - all before
   the commit.
A crash anywhere rolls all of it back; entry ids are deterministic, so the retry overwrites the
same vector points. Nothing is lost, nothing is processed twice.

The LLM step runs in its own loop beside this one, so an LLM outage never stops intake: its
tasks wait in PostgreSQL (messages stay 'buffered') until a backend answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from serve_app.entries import build_entries
from serve_app.fact_entries import topic_id
from serve_app.llm.config import LLMSettings
from serve_app.llm_construction import LLMConstruction, LLMStepTotals
from serve_app.messages import StoredMessage
from serve_app.metrics import PipelineTotals
from serve_app.pipeline.buffers import BufferConfig, BufferedMessage, SessionBuffers, ShortTermFlush
from serve_app.pipeline.compression import Compressed
from serve_app.pipeline.segmentation import SegmentationConfig, segment_boundaries
from serve_app.profiles import GroupResources
from serve_app.settings import Settings
from serve_app.storage.buffers_repo import (
    BufferedUpdate,
    BuffersRepo,
    ClaimedSession,
    SessionCounters,
)
from serve_app.storage.llm_tasks_repo import LLMTasksRepo, TaskSegment
from serve_app.storage.postgres import EntryRow, Repository, create_pool, entry_id
from serve_app.storage.vectors import VectorPoint
from serve_app.timeparse import weekday_name
from serve_app.tokens import count_tokens

logger = logging.getLogger("ray.serve")

Embed = Callable[[list[str]], Awaitable[Sequence]]
# (points, memory version): index entries of that memory version.
Index = Callable[[list[VectorPoint], int], Awaitable[None]]
Compress = Callable[[list[str]], Awaitable[list[Compressed]]]
Attend = Callable[[list[list[str]]], Awaitable[list[list[float]]]]

# Segmentation embeds a carried-over tail again at the next cut: remember recent vectors.
_SEGMENT_CACHE_SIZE = 4096


__all__ = ["IngestProcessor", "IngestWorkerDeployment", "build_worker", "topic_id"]


class _VectorCache:
    """Text -> embedding, least recently used out (hand-written: no async LRU in our deps)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    async def embed(self, texts: list[str], embed: Embed) -> np.ndarray:
        # Take what is cached before awaiting: concurrent sessions fill the cache meanwhile
        # and may evict the very vectors this call relies on.
        found = {t: self._data[t] for t in texts if t in self._data}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, vector in zip(missing, await embed(missing), strict=True):
                found[text] = self._data[text] = np.asarray(vector, dtype=np.float32)
        for t in found:
            if t in self._data:
                self._data.move_to_end(t)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
        return np.stack([found[t] for t in texts])


@dataclass
class _SessionWork:
    claim: ClaimedSession
    state: SessionBuffers
    fresh: list[StoredMessage]  # pending messages new to the buffers, in seq order
    stale: list[StoredMessage]  # pending but at or below the state's last_seq (never expected)
    may_flush: bool  # a flush is requested and this batch reads every message it covers
    intake: list[BufferedMessage] = field(default_factory=list)
    updates: list[BufferedUpdate] = field(default_factory=list)
    flushes: list[ShortTermFlush] = field(default_factory=list)
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
        # True: flushed buffers become LLM extraction tasks instead of extractive entries.
        self.llm_queue = llm_queue
        self.embed = embed
        self.index = index
        self.compress = compress
        self.attend = attend
        self.settings = settings
        self.embedding_model = embedding_model
        self.buffer_config = BufferConfig(
            sensory_max_tokens=settings.sensory_max_tokens,
            short_term_max_tokens=settings.short_term_max_tokens,
        )
        self.segmentation = SegmentationConfig(
            similarity_threshold=settings.segment_similarity_threshold,
            max_similarity_threshold=settings.segment_max_similarity_threshold,
            threshold_step=settings.segment_threshold_step,
            coarse_tolerance=settings.segment_coarse_tolerance,
        )
        self._vectors = _VectorCache(_SEGMENT_CACHE_SIZE)

    @property
    def compression_on(self) -> bool:
        return self.compress is not None

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
            pending = [m for w in work for m in w.fresh]
            if pending:
                await self._record_failure(pending, e)
            raise

    # --- steps ---------------------------------------------------------------------------

    async def _lockable(self, conn, claims: list[ClaimedSession]) -> list[ClaimedSession]:
        # A user being erased holds the exclusive lock: skip their sessions, the erase
        # deletes them when this transaction ends.
        ok: set[str] = set()
        for uid in sorted({c.user_id for c in claims}):
            got = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock_shared(hashtextextended($1, 7))", uid
            )
            if got:
                ok.add(uid)
        return [c for c in claims if c.user_id in ok]

    async def _load(self, conn, claims: list[ClaimedSession]) -> list[_SessionWork]:
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

    async def _process(self, conn, work: list[_SessionWork]) -> PipelineTotals:
        await self._intake(work)
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
        if rows:
            vectors = await self.embed([r.index_text for r in rows])
            await self.index(
                [VectorPoint.for_entry(r, v) for r, v in zip(rows, vectors, strict=True)],
                version,
            )
            await self.repo.insert_entries(conn, rows)
            await self.repo.bump_index_revision(conn, [r.user_id for r in rows])

        for w in ok:
            await self._save(conn, w, totals, version)
        totals.entries = len(rows)
        return totals

    async def _intake(self, work: list[_SessionWork]) -> None:
        """Compress the new messages (one call: the Compressor batches across sessions)."""
        fresh = [m for w in work for m in w.fresh]
        results: list[Compressed | None] = [None] * len(fresh)
        if self.compress is not None and fresh:
            results = list(await self.compress([m.content for m in fresh]))
        it = iter(results)
        for w in work:
            for m in w.fresh:
                c = next(it)
                raw = c.tokens_in if c is not None else count_tokens(m.content)
                text = c.compressed if c is not None else m.content
                tokens = c.tokens_out if c is not None else raw
                w.intake.append(
                    BufferedMessage(
                        message_id=m.message_id,
                        seq=m.seq,
                        text=text,
                        tokens=tokens,
                        role=m.role,
                        name=m.name,
                        ts=m.ts.isoformat(),
                        original=m.content if text != m.content else None,
                    )
                )
                w.updates.append(
                    BufferedUpdate(
                        message_id=m.message_id,
                        compressed=c.compressed if c is not None else None,
                        raw_tokens=raw,
                        compressed_tokens=tokens,
                    )
                )

    async def _advance(self, w: _SessionWork) -> None:
        """Feed the session's buffers; a failure stays with this session."""
        topics = w.state.next_topic
        try:
            w.flushes = await w.state.add_async(w.intake, self._cut)
            if w.may_flush:
                w.flushes += await w.state.flush_async(self._cut)
        except Exception as e:
            w.error = e
            return
        w.segments = w.state.next_topic - topics

    async def _cut(self, window: Sequence[BufferedMessage]) -> list[int]:
        if len(window) < 2:
            return []
        texts = [m.text for m in window]
        if self.attend is None:
            return segment_boundaries(
                await self._vectors.embed(texts, self.embed), None, self.segmentation
            )
        embeddings, attention = await asyncio.gather(
            self._vectors.embed(texts, self.embed), self.attend([texts])
        )
        return segment_boundaries(embeddings, attention[0], self.segmentation)

    async def _entries(self, conn, work: list[_SessionWork]) -> tuple[list[EntryRow], int]:
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
        unit = extraction.get("entry_unit") or self.settings.entry_unit
        rows: list[EntryRow] = []
        for w in work:
            flushed = [m for f in w.flushes for m in f.messages]
            if not flushed:
                continue
            user_id, session_id = w.key
            stored = await BuffersRepo.messages_by_ids(
                conn, user_id, session_id, [m.message_id for m in flushed]
            )
            previous = await self.repo.previous_messages(
                conn, [(user_id, session_id, flushed[0].seq)]
            )
            prev = previous.get(w.key)
            for flush in w.flushes:
                for segment in flush.segments:
                    ms = [stored[m.message_id] for m in segment.messages if m.message_id in stored]
                    if not ms:
                        continue
                    for d in build_entries(ms, prev, unit=unit):
                        rows.append(
                            EntryRow(
                                id=entry_id(
                                    user_id, session_id, "message", d.source_message_ids, version
                                ),
                                user_id=user_id,
                                session_id=session_id,
                                kind="message",
                                text=d.text,
                                index_text=d.index_text,
                                ts=d.ts,
                                weekday=weekday_name(d.ts),
                                speaker=d.speaker,
                                source_message_ids=d.source_message_ids,
                                topic_id=topic_id(session_id, segment.topic_index),
                                metadata={
                                    **d.metadata,
                                    "topic_index": segment.topic_index,
                                    "flush_index": flush.flush_index,
                                },
                                importance=None,
                                embedding_model=self.embedding_model,
                                version=version,
                            )
                        )
                    prev = ms[-1]
        return rows, version

    async def _save(self, conn, w: _SessionWork, totals: PipelineTotals, version: int) -> None:
        user_id, session_id = w.key
        if w.updates:
            await BuffersRepo.mark_buffered(conn, user_id, session_id, w.updates)
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
        held = [
            *w.state.pending,
            *w.state.sensory,
            *(m for segment in w.state.short_term for m in segment.messages),
        ]
        await BuffersRepo.save_state(
            conn,
            user_id,
            session_id,
            w.state.to_json(),
            len(held),
            sum(m.tokens for m in held),
        )
        counters = SessionCounters(
            raw_tokens=sum(u.raw_tokens for u in w.updates),
            compressed_tokens=sum(u.compressed_tokens for u in w.updates),
            segments=w.segments,
            flushes=len(w.flushes),
        )
        await BuffersRepo.add_counters(conn, user_id, session_id, counters)
        if w.may_flush:
            summarize = await BuffersRepo.clear_flush(conn, user_id, session_id, w.claim.flush_upto)
            if summarize and self.llm_queue:
                await LLMTasksRepo.enqueue_summary(conn, user_id, session_id)
        totals.sessions += 1
        totals.messages += len(w.updates)
        totals.raw_tokens += counters.raw_tokens
        totals.compressed_tokens += counters.compressed_tokens
        totals.segments += counters.segments
        totals.flushes += counters.flushes
        totals.done += len(done)
        totals.failed += len(w.stale)

    async def _record_failure(self, messages: list[StoredMessage], error: Exception) -> None:
        try:
            await self.repo.record_failure(
                messages, f"{type(error).__name__}: {error}", self.settings.worker_max_attempts
            )
        except Exception:
            logger.exception("could not record the failure of an ingest batch")


class IngestWorkerDeployment:
    async def __init__(
        self,
        settings_env: dict,
        embedder,
        router,
        compressor=None,
        compression: dict | None = None,
        profile: str = "local",
        llm=None,
    ) -> None:
        from deployments.metrics import serve_pipeline_metrics
        from serve_app.profiles import get_profile

        self.settings = Settings(**settings_env)
        self.profile = get_profile(profile)
        self.llm_handle = llm  # the in-cluster LLM deployment (profile backend vllm) or None
        self.embedder = embedder
        self.router = router
        self.compressor = compressor
        self.compression = compression or {
            "enabled": compressor is not None,
            "reason": "no compression status given",
        }
        self.pool = await create_pool(
            self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
        )
        info = await embedder.info.remote()
        self.embedding_model = info["model"]
        self.processor = IngestProcessor(
            Repository(self.pool),
            self._embed,
            self._index,
            self.settings,
            info["model"],
            compress=self._compress if compressor is not None else None,
            attend=self._attend if compressor is not None else None,
        )
        self.metrics = serve_pipeline_metrics(profile, compressor is not None)
        logger.info(
            "ingest worker: compression %s (%s)",
            "on" if compressor is not None else "off",
            self.compression.get("reason"),
        )
        self._wake = asyncio.Event()
        self._llm_wake = asyncio.Event()
        self._stats = {"batches": 0, "messages": 0, "errors": 0, "last_error": None}
        self._llm_stats = {"tasks": 0, "postponed": 0, "errors": 0, "last_error": None}
        self._apply_llm(self._env_llm_settings())
        self._last_loop = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._llm_task = asyncio.get_running_loop().create_task(self._run_llm())

    # --- LLM configuration ---------------------------------------------------------------------

    def _env_llm_settings(self) -> LLMSettings:
        from serve_app.llm.config import with_profile_backend

        return with_profile_backend(self.settings.llm, self.profile.llm)

    def _apply_llm(self, llm_settings: LLMSettings) -> None:
        """Build the backends; flushes go to the LLM queue exactly when some are configured."""
        from serve_app.llm.config import build_resilient_llm

        vllm = None
        if self.llm_handle is not None:
            from deployments.llm_server import ServeLLMBackend

            vllm = ServeLLMBackend(self.llm_handle, model=self.profile.llm.model or "")
        self.llm = build_resilient_llm(llm_settings, vllm_backend=vllm)
        self.llm_settings = llm_settings
        self.construction = LLMConstruction(
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
        self._llm_wake.set()

    async def reconfigure(self, user_config: dict) -> None:
        """Serve `user_config` {"llm": LLMSettings as JSON, or null for the environment's}:
        change LLM backends live, without restarting the replica."""
        if "llm" not in (user_config or {}):
            return
        value = user_config["llm"]
        self._apply_llm(
            self._env_llm_settings() if value is None else LLMSettings.model_validate(value)
        )

    async def _embed(self, texts: list[str]):
        return await self.embedder.embed.remote(texts)

    async def _index(self, points: list[VectorPoint], memory_version: int) -> None:
        await self.router.index.remote(points, memory_version)

    async def _compress(self, texts: list[str]) -> list[Compressed]:
        return await self.compressor.compress.remote(texts)

    async def _attend(self, windows: list[list[str]]) -> list[list[float]]:
        return await self.compressor.consecutive_attention.remote(windows)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            self._last_loop = time.monotonic()
            try:
                totals = await self.processor.process_batch()
                self.metrics.record(totals)
                if totals.failed_sessions:
                    raise RuntimeError(f"{totals.failed_sessions} session(s) failed, see log")
                backoff = 0.5
                if totals.flushes:
                    self._llm_wake.set()
                if totals.did_work:
                    self._stats["batches"] += 1
                    self._stats["messages"] += totals.messages
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._stats["errors"] += 1
                self._stats["last_error"] = f"{type(e).__name__}: {e}"
                logger.exception("ingest batch failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_idle_poll_s)

    async def _run_llm(self) -> None:
        """Run queued LLM tasks; their own not_before times pace retries against a dead LLM."""
        backoff = 0.5
        while True:
            try:
                totals: LLMStepTotals = await self.construction.process()
                self.metrics.record(totals.pipeline())
                backoff = 0.5
                if totals.did_work:
                    self._llm_stats["tasks"] += totals.tasks
                    self._llm_stats["postponed"] += totals.postponed
                    if totals.postponed < totals.tasks:
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._llm_stats["errors"] += 1
                self._llm_stats["last_error"] = f"{type(e).__name__}: {e}"
                logger.exception("LLM step failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._llm_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._llm_wake.wait(), self.settings.worker_idle_poll_s)

    async def kick(self) -> None:
        """New messages were stored: look now instead of at the next poll."""
        self._wake.set()

    async def flush(self, user_id: str, session_id: str, summarize: bool = False) -> int | None:
        """Durably ask for the session's buffered messages to become memories, and wake up.

        `summarize`: the session ended (the client's flush: true, not a flush implied by
        wait): with an LLM the session summary is written once its facts are. Returns the last
        seq the flush covers, or None for an unknown session. Any replica honours the request
        (it lives in PostgreSQL), also after a restart.
        """
        upto = await BuffersRepo.request_flush(self.pool, user_id, session_id, summarize=summarize)
        self._wake.set()
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
        self._wake.set()
        return {"queued": True, "flush_upto_seq": upto}

    async def retry_failed(self, user_id: str, session_id: str) -> dict | None:
        """Queue the session's failed LLM work again (POST /v1/sessions/{id}/retry).
        Returns {"tasks", "messages"} put back, or None for an unknown session."""
        out = await LLMTasksRepo.retry_failed(self.pool, user_id, session_id)
        self._llm_wake.set()
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

    def _llm_detail(self) -> dict:
        if self.llm is None:
            return {"mode": "extractive", "ok": True, "backends": [], **self._llm_stats}
        backends = self.llm.status()
        return {
            "mode": "llm",
            # Not an error for readiness: ingestion goes on and the work waits in PostgreSQL.
            "ok": True,
            "available": any(b["state"] != "open" for b in backends),
            "backends": backends,
            "usage": self.llm.usage.rows(),
            **self._llm_stats,
        }

    async def _compression_detail(self) -> dict:
        detail = dict(self.compression)
        if self.compressor is None:
            return {**detail, "ok": True}
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
            **self._stats,
            "seconds_since_loop": round(time.monotonic() - self._last_loop, 3),
            "totals": vars(self.metrics.totals),
            "compression": await self._compression_detail(),
            "llm": self._llm_detail(),
        }

    def check_health(self) -> None:
        # Serve restarts the replica if its loop died.
        if self._task.done() or self._llm_task.done():
            raise RuntimeError("ingest loop stopped")


def build_worker(
    group: GroupResources,
    settings_env: dict,
    embedder,
    router,
    compressor=None,
    compression: dict | None = None,
    profile: str = "local",
    llm=None,
):
    """Bind the IngestWorker group; `compressor` is the Compressor handle, None when off;
    `llm` the bound LLM deployment when the profile hosts vLLM, else None."""
    from ray import serve

    return (
        serve.deployment(IngestWorkerDeployment)
        .options(name="IngestWorker", **group.deployment_options())
        .bind(settings_env, embedder, router, compressor, compression, profile, llm)
    )
