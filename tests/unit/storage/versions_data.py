"""Rows for the memory-version and generation tests: messages, entries of a version,
generation rows, and the two-version fixture (tests/unit/storage/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from serve_app.model.entries import EntryRow, entry_id
from serve_app.model.messages import NewMessage

T0 = datetime(2023, 5, 20, tzinfo=UTC)


def msg(mid: str, minutes: int = 0) -> NewMessage:
    return NewMessage(mid, "user", "Ann", f"Ann says {mid}", T0 + timedelta(minutes=minutes),
                      True, {})  # fmt: skip


def entry(mid: str, version: int, session: str = "s") -> EntryRow:
    return EntryRow(
        id=entry_id("u", session, "message", [mid], version),
        user_id="u",
        session_id=session,
        kind="message",
        text=f"v{version} {mid}",
        index_text=f"v{version} {mid}",
        ts=T0,
        weekday="Saturday",
        speaker="Ann",
        source_message_ids=[mid],
        topic_id=None,
        metadata={},
        importance=None,
        embedding_model="m",
        version=version,
    )


async def generations(pool, *rows) -> None:
    for gen, status, version in rows:
        await pool.execute(
            "INSERT INTO vector_generations (generation, embedding_model, dim, collection,"
            " status, memory_version) VALUES ($1, 'm', 3, $2, $3, $4)",
            gen,
            f"c{gen}",
            status,
            version,
        )


async def done(pool, mids, versions) -> None:
    await pool.execute(
        "UPDATE messages SET status='done', versions=$2 WHERE message_id = ANY($1::text[])",
        list(mids),
        list(versions),
    )


async def status_of(pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT generation, status FROM vector_generations")
    return {r["generation"]: r["status"] for r in rows}
