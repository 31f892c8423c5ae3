"""LLM calls and prompt tokens of memory construction, counted with the scripted engine double.

Each flushed short-term buffer becomes one extraction call, built by the pipeline's own
`serve_app.llm.extraction.extract_memories` through `ResilientLLM`, so the prompt is exactly
what a real engine would receive. The double answers with the smallest reply the schema allows:
prompt tokens and call counts are exact, completion tokens are a floor (a real model writes
facts and a summary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from serve_app.llm.extraction import SourceMessage, extract_memories
from serve_app.llm.resilience import ResilientLLM
from serve_app.llm.scripted import Respond, ScriptedBackend, schema_example_responder
from serve_app.pipeline.buffers import BufferedMessage, ShortTermFlush


def source_messages(messages: Sequence[BufferedMessage]) -> list[SourceMessage]:
    return [
        SourceMessage(
            message_id=m.message_id,
            ts=datetime.fromisoformat(m.ts),
            speaker=m.name or m.role,
            text=m.text,
        )
        for m in messages
    ]


async def _account(flushes: Sequence[ShortTermFlush]) -> dict[str, int]:
    backend = ScriptedBackend(default=Respond(schema_example_responder))
    llm = ResilientLLM([backend])
    for flush in flushes:
        if flush.messages:
            await extract_memories(llm, source_messages(flush.messages))
    return {
        "calls": llm.usage.calls,
        "prompt_tokens": llm.usage.prompt_tokens,
        "completion_tokens": llm.usage.completion_tokens,
        "completion_tokens_are_floor": True,
    }


def extraction_usage(flushes: Sequence[ShortTermFlush]) -> dict[str, int]:
    """LLM calls and tokens that extracting memories from `flushes` takes (engine double)."""
    return asyncio.run(_account(flushes))
