"""Ingest worker: turns stored messages into indexed memory entries, in the background.

One batch is one PostgreSQL transaction: claim pending messages (FOR UPDATE SKIP LOCKED, so
replicas share the work), build entries, embed, write vectors, write entries, mark the messages
done. Entry ids are deterministic, so a crash anywhere before the commit leaves the messages
pending and the retry overwrites the same vector points: nothing is lost or duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from itertools import groupby

from ray import serve

from serve_app.entries import build_entries
from serve_app.messages import StoredMessage
from serve_app.profiles import GroupResources
from serve_app.settings import Settings
from serve_app.storage.postgres import EntryRow, Repository, create_pool, entry_id
from serve_app.storage.vectors import VectorPoint
from serve_app.timeparse import weekday_name
from serve_app.tokens import count_tokens

logger = logging.getLogger("ray.serve")


class IngestProcessor:
    """One batch at a time; no Ray in here beyond the two async callables it is given."""

    def __init__(self, repo: Repository, embed, index, settings: Settings, embedding_model: str):
        self.repo = repo
        self.embed = embed  # async (list[str]) -> list[vector]
        self.index = index  # async (list[VectorPoint]) -> None
        self.settings = settings
        self.embedding_model = embedding_model

    async def process_batch(self) -> int:
        """Process up to one batch; returns how many messages were claimed."""
        pool = self.repo.pool
        async with pool.acquire() as conn, conn.transaction():
            claimed = await self.repo.claim_pending(conn, self.settings.worker_batch_messages)
            if not claimed:
                return 0
            messages = await self._lockable(conn, claimed)
            if not messages:
                return len(claimed)
            try:
                await self._build_and_write(conn, messages)
            except Exception as e:
                # Leave the claim (the transaction rolls back); count the attempt outside it.
                asyncio.get_running_loop().create_task(self._record_failure(messages, e))
                raise
        return len(claimed)

    async def _lockable(self, conn, claimed: list[StoredMessage]) -> list[StoredMessage]:
        # A user being erased holds the exclusive lock: skip their messages, the erase
        # deletes them when this transaction ends.
        ok: set[str] = set()
        for uid in sorted({m.user_id for m in claimed}):
            got = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock_shared(hashtextextended($1, 7))", uid
            )
            if got:
                ok.add(uid)
        return [m for m in claimed if m.user_id in ok]

    async def _build_and_write(self, conn, messages: list[StoredMessage]) -> None:
        messages.sort(key=lambda m: (m.user_id, m.session_id, m.seq))
        groups = [
            (key, list(ms))
            for key, ms in groupby(messages, key=lambda m: (m.user_id, m.session_id))
        ]
        previous = await self.repo.previous_messages(
            conn, [(u, s, ms[0].seq) for (u, s), ms in groups]
        )
        rows: list[EntryRow] = []
        for (user_id, session_id), ms in groups:
            for d in build_entries(
                ms, previous.get((user_id, session_id)), unit=self.settings.entry_unit
            ):
                rows.append(
                    EntryRow(
                        id=entry_id(user_id, session_id, "message", d.source_message_ids),
                        user_id=user_id,
                        session_id=session_id,
                        kind="message",
                        text=d.text,
                        index_text=d.index_text,
                        ts=d.ts,
                        weekday=weekday_name(d.ts),
                        speaker=d.speaker,
                        source_message_ids=d.source_message_ids,
                        topic_id=None,
                        metadata=d.metadata,
                        importance=None,
                        embedding_model=self.embedding_model,
                    )
                )
        if rows:
            vectors = await self.embed([r.index_text for r in rows])
            await self.index(
                [
                    VectorPoint(
                        id=r.id,
                        vector=v,
                        user_id=r.user_id,
                        session_id=r.session_id,
                        ts=r.ts,
                        speaker=r.speaker,
                    )
                    for r, v in zip(rows, vectors, strict=True)
                ]
            )
            await self.repo.insert_entries(conn, rows)
        raw_tokens: dict[tuple[str, str], int] = defaultdict(int)
        for m in messages:
            raw_tokens[(m.user_id, m.session_id)] += count_tokens(m.content)
        await self.repo.mark_done(conn, messages, raw_tokens)
        await self.repo.bump_index_version(conn, [m.user_id for m in messages])

    async def _record_failure(self, messages: list[StoredMessage], error: Exception) -> None:
        try:
            await self.repo.record_failure(
                messages, f"{type(error).__name__}: {error}", self.settings.worker_max_attempts
            )
        except Exception:
            logger.exception("could not record the failure of an ingest batch")


class IngestWorkerDeployment:
    async def __init__(self, settings_env: dict, embedder, router) -> None:
        self.settings = Settings(**settings_env)
        self.embedder = embedder
        self.router = router
        self.pool = await create_pool(
            self.settings.pg_dsn, self.settings.pg_pool_min, self.settings.pg_pool_max
        )
        info = await embedder.info.remote()
        self.processor = IngestProcessor(
            Repository(self.pool), self._embed, self._index, self.settings, info["model"]
        )
        self._wake = asyncio.Event()
        self._stats = {"batches": 0, "messages": 0, "errors": 0, "last_error": None}
        self._last_loop = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _embed(self, texts: list[str]):
        return await self.embedder.embed.remote(texts)

    async def _index(self, points: list[VectorPoint]) -> None:
        await self.router.index.remote(points)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            self._last_loop = time.monotonic()
            try:
                n = await self.processor.process_batch()
                backoff = 0.5
                if n:
                    self._stats["batches"] += 1
                    self._stats["messages"] += n
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

    async def kick(self) -> None:
        """New messages were stored: look now instead of at the next poll."""
        self._wake.set()

    async def ready(self) -> dict:
        if self._task.done():
            exc = self._task.exception()
            raise RuntimeError(f"ingest loop stopped: {exc!r}")
        return {**self._stats, "seconds_since_loop": round(time.monotonic() - self._last_loop, 3)}

    def check_health(self) -> None:
        # Serve restarts the replica if its loop died.
        if self._task.done():
            raise RuntimeError("ingest loop stopped")


def build_worker(group: GroupResources, settings_env: dict, embedder, router):
    return (
        serve.deployment(IngestWorkerDeployment)
        .options(name="IngestWorker", **group.deployment_options())
        .bind(settings_env, embedder, router)
    )
