"""Memory entries from one LLM extraction: a 'fact' entry per fact, a 'summary' entry for the
topic summary of the flushed buffer. Pure: the worker embeds and writes what this returns.

Entry ids come from the flush and the position in the reply, so a retry after a crash
overwrites the same vector points instead of adding new ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serve_app.llm.extraction import Extraction
from serve_app.messages import StoredMessage
from serve_app.storage.postgres import EntryRow, entry_id
from serve_app.timeparse import weekday_name


def topic_id(session_id: str, topic_index: int) -> str:
    # Session ids never contain "/" (api_models), so this is unique per user.
    return f"{session_id}/{topic_index}"


def extraction_entries(
    extraction: Extraction,
    *,
    user_id: str,
    session_id: str,
    flush_index: int,
    messages: Sequence[StoredMessage],
    topics: Mapping[str, int],
    embedding_model: str,
    backend: str,
    model: str,
    version: int = 1,
) -> list[EntryRow]:
    """`messages`: the flushed buffer's messages in seq order; `topics`: message id -> topic
    index; `version`: the memory version the entries belong to. Facts take the time stamp and
    topic of their first source message."""
    by_id = {m.message_id: m for m in messages}
    origin = {"flush_index": flush_index, "llm_backend": backend, "llm_model": model}
    rows: list[EntryRow] = []
    for i, fact in enumerate(extraction.facts):
        sources = [by_id[s] for s in fact.source_message_ids if s in by_id]
        if not sources:
            continue  # the parser only keeps ids it was given; defensive for a stale buffer
        first = sources[0]
        speakers = {m.speaker for m in sources}
        fact_topics = sorted({topics[m.message_id] for m in sources if m.message_id in topics})
        rows.append(
            EntryRow(
                id=entry_id(user_id, session_id, "fact", [f"flush:{flush_index}", str(i)], version),
                user_id=user_id,
                session_id=session_id,
                kind="fact",
                text=fact.text,
                index_text=fact.text,
                ts=first.ts,
                weekday=weekday_name(first.ts),
                speaker=speakers.pop() if len(speakers) == 1 else None,
                source_message_ids=[m.message_id for m in sources],
                topic_id=topic_id(session_id, fact_topics[0]) if fact_topics else None,
                metadata={
                    **origin,
                    "keywords": list(fact.keywords),
                    "entities": list(fact.entities),
                    "time": fact.time.isoformat() if fact.time else None,
                    "topic_indexes": fact_topics,
                },
                importance=fact.importance,
                embedding_model=embedding_model,
                version=version,
            )
        )
    if extraction.summary and messages:
        first = messages[0]
        all_topics = sorted({topics[m.message_id] for m in messages if m.message_id in topics})
        rows.append(
            EntryRow(
                id=entry_id(user_id, session_id, "summary", [f"flush:{flush_index}"], version),
                user_id=user_id,
                session_id=session_id,
                kind="summary",
                text=extraction.summary,
                index_text=extraction.summary,
                ts=first.ts,
                weekday=weekday_name(first.ts),
                speaker=None,
                source_message_ids=[m.message_id for m in messages],
                topic_id=topic_id(session_id, all_topics[0]) if all_topics else None,
                metadata={**origin, "topic_indexes": all_topics, "facts": len(rows)},
                importance=None,
                embedding_model=embedding_model,
                version=version,
            )
        )
    return rows
