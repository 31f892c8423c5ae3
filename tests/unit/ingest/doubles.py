"""Engine doubles and helpers shared by the ingestion tests: the embedder, vector index and
compressor are doubles (external engines); everything else they drive is the real code."""

from __future__ import annotations

import asyncio
import random
import re
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np

from serve_app.ingest.processor import IngestProcessor
from serve_app.metrics import PipelineTotals
from serve_app.model.messages import NewMessage
from serve_app.pipeline.compression import Compressed
from serve_app.pipeline.tokens import count_tokens
from serve_app.settings import Settings
from serve_app.storage.postgres import Repository

T0 = datetime(2023, 5, 20, 10, tzinfo=UTC)
TOPICS = {
    "dog": "dog puppy leash park walk bark fetch collar",
    "cello": "cello bow strings concert practice teacher music recital",
    "trip": "paris flight hotel louvre museum croissant metro luggage",
    "garden": "tomato garden soil seeds watering compost basil harvest",
}


# --- test doubles for the engines ------------------------------------------------------------


def bag_of_words(text: str, dim: int = 4096) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        v[zlib.crc32(word.encode()) % dim] += 1
    return v / (np.linalg.norm(v) or 1.0)


class Engines:
    """Embedder, vector index and compressor doubles that record what they were asked."""

    def __init__(self) -> None:
        self.points: dict[str, object] = {}  # the vector index: upserts by id
        self.versions: set[int] = set()  # memory versions indexed into
        self.index_calls = 0
        self.fail_index = False
        self.embed_fail_on: str | None = None
        self.embedded: list[str] = []
        self.embed_calls: list[list[str]] = []
        self.compressed: list[str] = []
        self.attended: list[list[str]] = []

    async def embed(self, texts: list[str]) -> list[np.ndarray]:
        await asyncio.sleep(0.001)  # let concurrent workers interleave
        if self.embed_fail_on and any(self.embed_fail_on in t for t in texts):
            raise RuntimeError("embedder refused the text")
        self.embedded += texts
        self.embed_calls.append(list(texts))
        return [bag_of_words(t) for t in texts]

    async def index(self, points, version: int = 1) -> None:
        self.index_calls += 1
        self.versions.add(version)
        if self.fail_index:
            raise ConnectionError("vector index down")
        for p in points:
            self.points[p.id] = p

    async def compress(self, texts: list[str]) -> list[Compressed]:
        # Keeps every other word: a stand-in for LLMLingua-2 at rate 0.5.
        self.compressed += texts
        out = []
        for t in texts:
            short = " ".join(t.split()[::2])
            out.append(Compressed(t, short, count_tokens(t), count_tokens(short)))
        return out

    async def attend(self, windows: list[list[str]]) -> list[list[float]]:
        self.attended += windows
        return [[0.5] * (len(w) - 1) for w in windows]


# --- fixtures and helpers --------------------------------------------------------------------


def settings(**kw) -> Settings:
    base = {"sensory_max_tokens": 64, "short_term_max_tokens": 96, "entry_unit": "message_ctx"}
    return Settings(pg_dsn="postgresql://unused", **{**base, **kw})


def processor(pool, engines: Engines, compression: bool = False, **kw) -> IngestProcessor:
    return IngestProcessor(
        Repository(pool),
        engines.embed,
        engines.index,
        settings(**kw),
        "double",
        compress=engines.compress if compression else None,
        attend=engines.attend if compression else None,
    )


def conversation(n: int, seed: int = 3, prefix: str = "m") -> list[tuple[str, str, str]]:
    """(message_id, topic, text): topic runs of 3..7 messages, each text 6 words of its topic."""
    rng = random.Random(seed)
    out, names, topic, left = [], list(TOPICS), None, 0
    for i in range(n):
        if left == 0:
            topic = rng.choice([t for t in names if t != topic])
            left = rng.randint(3, 7)
        left -= 1
        words = rng.sample(TOPICS[topic].split(), 6)
        out.append((f"{prefix}{i}", topic, " ".join(words)))
    return out


async def add(pool, user: str, session: str, items, start_minute: int = 0) -> None:
    msgs = [
        NewMessage(
            message_id=mid,
            role="user" if i % 3 else "assistant",  # roles need not alternate
            name=None if i % 3 == 0 else ("Ann" if i % 2 else "Bo"),
            content=text,
            ts=T0 + timedelta(minutes=i),
            ts_provided=True,
            metadata={},
        )
        for i, (mid, _, text) in enumerate(items, start=start_minute)
    ]
    await Repository(pool).add_messages(user, session, msgs, None)


async def drain(proc: IngestProcessor) -> PipelineTotals:
    total = PipelineTotals()
    while (t := await proc.process_batch()).did_work:
        total.add(t)
    return total


async def statuses(pool, user: str) -> dict[str, str]:
    rows = await pool.fetch("SELECT message_id, status FROM messages WHERE user_id=$1", user)
    return {r["message_id"]: r["status"] for r in rows}


async def entries(pool, user: str, by_kind: bool = False) -> list[dict]:
    """The user's entries in time order (`by_kind`: grouped by kind first)."""
    rows = await pool.fetch(
        "SELECT id::text AS id, kind, text, index_text, source_message_ids, topic_id, metadata,"
        " importance FROM memory_entries WHERE user_id=$1"
        f" ORDER BY {'kind, ' if by_kind else ''}ts, id",
        user,
    )
    return [dict(r) for r in rows]


def cited(rows: list[dict]) -> list[str]:
    return [i for r in rows for i in r["source_message_ids"]]


async def drain_llm(step, rounds: int = 20) -> None:
    """Run the LLM step until it finds no task (at most `rounds` times)."""
    for _ in range(rounds):
        if not (await step.process()).did_work:
            return
