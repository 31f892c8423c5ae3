"""LLM memory construction of one flushed buffer: the extraction call, and its 'fact' entries
(one per fact) and 'summary' entry (the topic summary of the buffer). The ingest worker's LLM
step and re-extraction both call these. Pure: engines come in as arguments, the caller embeds
and writes what this returns.

Entry ids come from the flush and the position in the reply, so a retry after a crash
overwrites the same vector points instead of adding new ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serve_app.llm.config import LLMSettings
from serve_app.llm.extraction import Extraction, SourceMessage, extract_memories
from serve_app.llm.resilience import LLMResult, ResilientLLM
from serve_app.model.entries import EntryContext, EntryRow
from serve_app.model.messages import StoredMessage


async def extract_flush(
    llm: ResilientLLM,
    settings: LLMSettings,
    messages: Sequence[StoredMessage],
    compressed: Mapping[str, str | None],
    prompt: str | None,
) -> LLMResult:
    """One extraction call over a flushed buffer's messages (in seq order). `compressed`:
    message id -> the text the LLM reads instead of the original (absent or None: original);
    `prompt`: the system prompt, None for the built-in one. Returns the LLM result (value: an
    Extraction); raises LLMUnavailable / LLMOutputInvalid."""
    return await extract_memories(
        llm,
        [SourceMessage.from_stored(m, text=compressed.get(m.message_id)) for m in messages],
        limits=settings.limits(),
        max_tokens=settings.extraction_max_tokens,
        temperature=settings.temperature,
        system_prompt=prompt,
    )


def extraction_entries(
    extraction: Extraction,
    ctx: EntryContext,
    *,
    flush_index: int,
    messages: Sequence[StoredMessage],
    topics: Mapping[str, int],
    backend: str,
    model: str,
) -> list[EntryRow]:
    """`messages`: the flushed buffer's messages in seq order; `topics`: message id -> topic
    index. Facts take the time stamp and topic of their first source message."""
    by_id = {m.message_id: m for m in messages}
    origin = {"flush_index": flush_index, "llm_backend": backend, "llm_model": model}
    rows: list[EntryRow] = []
    for i, fact in enumerate(extraction.facts):
        sources = [by_id[s] for s in fact.source_message_ids if s in by_id]
        if not sources:
            continue  # the parser only keeps ids it was given; defensive for a stale buffer
        speakers = {m.speaker for m in sources}
        fact_topics = sorted({topics[m.message_id] for m in sources if m.message_id in topics})
        rows.append(
            ctx.row(
                kind="fact",
                key=[f"flush:{flush_index}", str(i)],
                text=fact.text,
                index_text=fact.text,
                ts=sources[0].ts,
                speaker=speakers.pop() if len(speakers) == 1 else None,
                source_message_ids=[m.message_id for m in sources],
                topic_index=fact_topics[0] if fact_topics else None,
                metadata={
                    **origin,
                    "keywords": list(fact.keywords),
                    "entities": list(fact.entities),
                    "time": fact.time.isoformat() if fact.time else None,
                    "topic_indexes": fact_topics,
                },
                importance=fact.importance,
            )
        )
    if extraction.summary and messages:
        all_topics = sorted({topics[m.message_id] for m in messages if m.message_id in topics})
        rows.append(
            ctx.row(
                kind="summary",
                key=[f"flush:{flush_index}"],
                text=extraction.summary,
                index_text=extraction.summary,
                ts=messages[0].ts,
                speaker=None,
                source_message_ids=[m.message_id for m in messages],
                topic_index=all_topics[0] if all_topics else None,
                metadata={**origin, "topic_indexes": all_topics, "facts": len(rows)},
            )
        )
    return rows
