"""Memories for the retrieval tests: a bag-of-words embedding whose nearest neighbours are
predictable, and entries written to PostgreSQL (and optionally a vector store)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from serve_app.model.entries import EntryRow, entry_id
from serve_app.storage.postgres import Repository
from serve_app.storage.vectors import QdrantVectorStore, VectorPoint

WORDS = ("dog", "cat", "paris", "pizza", "guitar", "wedding", "job", "book", "violin")
DIM = len(WORDS) + 1
T0 = datetime(2023, 5, 20, tzinfo=UTC)


def bow(text: str) -> list[float]:
    """One dimension per word of WORDS (+1 shared, so no vector is zero), L2-normalised."""
    tokens = text.lower().replace(".", " ").split()
    v = [float(tokens.count(w)) for w in WORDS] + [0.1]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


async def embed(texts: list[str]) -> list[list[float]]:
    return [bow(t) for t in texts]


class BowModel:
    """A "local model" of another embedding model: the same words, reversed, plus padding, so
    its vectors have another dimension than the served ones."""

    dim = DIM + 2

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        return [list(reversed(bow(t))) + [0.0, 0.0] for t in texts]


def row(
    user: str,
    session: str,
    n: int,
    text: str,
    *,
    version: int = 1,
    speaker: str = "Ann",
    hours: int = 0,
) -> EntryRow:
    return EntryRow(
        id=entry_id(user, session, "message", [f"m{n}"], version),
        user_id=user,
        session_id=session,
        kind="message",
        text=text,
        index_text=text,
        ts=T0 + timedelta(hours=hours),
        weekday="Saturday",
        speaker=speaker,
        source_message_ids=[f"m{n}"],
        topic_id=None,
        metadata={},
        importance=None,
        embedding_model="served",
        version=version,
    )


async def store_rows(
    repo: Repository, rows: Sequence[EntryRow], vectors: QdrantVectorStore | None = None
) -> list[VectorPoint]:
    """Write entries to PostgreSQL (users and sessions created, revision bumped) and, with a
    store, their points; returns the points."""
    for user, session in sorted({(r.user_id, r.session_id) for r in rows}):
        await repo.add_messages(user, session, [], None)
    points = [VectorPoint.for_entry(r, bow(r.index_text)) for r in rows]
    async with repo.pool.acquire() as conn:
        await repo.insert_entries(conn, rows)
        await repo.bump_index_revision(conn, [r.user_id for r in rows])
    if vectors is not None:
        await vectors.upsert(points)
    return points
