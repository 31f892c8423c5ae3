"""LLM calls and prompt tokens of memory construction, counted with the scripted engine double.

Each flushed short-term buffer becomes one extraction call, built by the pipeline's own
`serve_app.llm.extraction.extract_memories` through `ResilientLLM`, so the prompt is exactly
what a real engine would receive. The double answers with the smallest reply the schema allows:
prompt tokens and call counts are exact, completion tokens are a floor (a real model writes
facts and a summary).
"""

from __future__ import annotations

import asyncio
import json
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


# --- the whole worker path: intake, queued extraction, session summaries -----------
#
#   HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.llm_economy --data ../shared/data/locomo-dev \
#       [--out benchmarks/results/llm_economy.json]
#
# Each LoCoMo conversation is one user, each of its sessions one memserve session, flushed at
# its end with a summary request, as a client would. The real worker (IngestProcessor with the
# LLM queue, then LLMStep) runs against a throwaway PostgreSQL database with the real
# MiniLM embedder; compression is off (benchmarks.token_economy counts flushes with it on). The
# scripted double states one fact per message, so completion tokens and the summary prompts
# (built from the facts) are those of a model that keeps everything: an upper-end figure.

LIGHTMEM_PUBLISHED = {
    "conversations": 10,
    "th512_r0.7": {"calls": 415, "tokens": 997_600},
    "th768_r0.8": {"calls": 298},
    "source": "LightMem paper, LoCoMo with gpt-4o-mini (memory construction)",
}


def one_fact_per_message(messages, schema) -> str:
    """A model that keeps every message: one fact citing it, and a topic summary; or a session
    summary when asked for one."""
    import json
    import re

    if "key_events" in schema["properties"]:
        return json.dumps(
            {
                "title": "Session",
                "summary": "A conversation.",
                "topics": [],
                "participants": [],
                "key_events": [],
                "open_items": [],
            }
        )
    facts = []
    for line in messages[-1]["content"].splitlines():
        m = re.match(r"^\[(m\d+)\] \d\d:\d\d ([^:]+): (.*)$", line)
        if m:
            facts.append(
                {
                    "text": f"{m[2]}: {m[3]}",
                    "source_message_ids": [m[1]],
                    "keywords": [],
                    "entities": [m[2]],
                    "time": None,
                    "importance": 0.5,
                }
            )
    return json.dumps({"facts": facts, "summary": "A topic of the conversation."})


async def worker_usage(conv, pool, embed) -> dict:
    """Calls and tokens of ingesting one conversation through the worker's LLM path."""
    from serve_app.ingest.llm_step import LLMStep
    from serve_app.ingest.processor import IngestProcessor
    from serve_app.llm.config import LLMSettings
    from serve_app.llm.scripted import chat_prompt_tokens
    from serve_app.pipeline.tokens import count_tokens
    from serve_app.settings import Settings
    from serve_app.storage.buffers_repo import BuffersRepo
    from serve_app.storage.postgres import NewMessage, Repository

    async def index(points) -> None:
        return None

    repo = Repository(pool)
    settings = Settings(pg_dsn="postgresql://unused")
    proc = IngestProcessor(repo, embed, index, settings, "minilm", llm_queue=True)
    backend = ScriptedBackend(default=Respond(one_fact_per_message))
    step = LLMStep(
        repo,
        embed,
        index,
        embedding_model="minilm",
        llm=ResilientLLM([backend]),
        llm_settings=LLMSettings(),
    )
    user = conv.conv_id
    for s in conv.sessions:
        await repo.add_messages(
            user,
            s.session_id,
            [
                NewMessage(t.message_id, "user", t.speaker, t.content, s.ts, True, {})
                for t in s.turns
            ],
            None,
        )
        await BuffersRepo.request_flush(pool, user, s.session_id, summarize=True)
    flushes = 0
    while (t := await proc.process_batch()).did_work:
        flushes += t.flushes
    while (await step.process()).did_work:
        pass
    row = await pool.fetchrow(
        "SELECT sum(llm_calls)::bigint AS calls, sum(llm_input_tokens)::bigint AS input,"
        " sum(llm_output_tokens)::bigint AS output, count(summary) AS summaries,"
        " sum(raw_tokens)::bigint AS raw FROM sessions WHERE user_id=$1",
        user,
    )
    left = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE user_id=$1 AND status <> 'done'", user
    )
    kinds = {"extract": [0, 0], "summary": [0, 0]}
    for call in backend.calls:
        kind = "summary" if "key_events" in call.schema["properties"] else "extract"
        kinds[kind][0] += 1
        kinds[kind][1] += chat_prompt_tokens(call.messages, count_tokens)
    return {
        "conversation": user,
        "sessions": len(conv.sessions),
        "messages": sum(len(s.turns) for s in conv.sessions),
        "raw_tokens": row["raw"],
        "flushes": flushes,
        "llm_calls": row["calls"],
        "extraction_calls": kinds["extract"][0],
        "summary_calls": kinds["summary"][0],
        "input_tokens": row["input"],
        "extraction_input_tokens": kinds["extract"][1],
        "summary_input_tokens": kinds["summary"][1],
        "output_tokens": row["output"],
        "summaries": row["summaries"],
        "messages_not_done": left,
    }


async def _worker_benchmark(data: str) -> dict:
    import numpy as np

    from benchmarks.common import load_minilm
    from benchmarks.locomo_data import load_conversations
    from serve_app.storage.postgres import create_pool, migrate
    from tests.pg import create_database, drop_database

    embedder = load_minilm()
    cache: dict[str, np.ndarray] = {}

    async def embed(texts: list[str]):
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            for t, v in zip(missing, embedder.encode(missing), strict=True):
                cache[t] = v
        return [cache[t] for t in texts]

    dsn = await create_database("memserve_llmecon")
    pool = await create_pool(dsn, 1, 8)
    try:
        await migrate(pool)
        rows = []
        for conv in load_conversations(data):
            rows.append(await worker_usage(conv, pool, embed))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        await pool.close()
        await drop_database(dsn)
    n = len(rows)
    total = {
        k: sum(r[k] for r in rows)
        for k in ("messages", "flushes", "llm_calls", "extraction_calls", "summary_calls")
    }
    total["input_tokens"] = sum(r["input_tokens"] for r in rows)
    total["output_tokens"] = sum(r["output_tokens"] for r in rows)
    return {
        "benchmark": "llm_economy",
        "data": data,
        "compression": "off",
        "short_term_max_tokens": 512,
        "conversations": rows,
        "total": total,
        "per_conversation": {k: round(v / n, 1) for k, v in total.items()},
        "lightmem_published_per_conversation": {
            "th512_r0.7": {"calls": 41.5, "tokens": 99_760},
            "th768_r0.8": {"calls": 29.8},
        },
        "lightmem_published": LIGHTMEM_PUBLISHED,
    }


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import os
    from pathlib import Path

    parser = argparse.ArgumentParser(description="LLM calls and tokens of the worker's LLM path")
    parser.add_argument("--data", default="../shared/data/locomo-dev")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = asyncio.run(_worker_benchmark(args.data))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
