"""LLM accounting of memory construction: one extraction call per flush, exact prompt tokens."""

from __future__ import annotations

from benchmarks.llm_economy import extraction_usage
from serve_app.llm.extraction import build_extraction_request
from serve_app.llm.scripted import chat_prompt_tokens
from serve_app.pipeline.buffers import BufferedMessage, Segment, ShortTermFlush
from serve_app.pipeline.tokens import count_tokens


def _flush(index: int, n: int) -> ShortTermFlush:
    msgs = tuple(
        BufferedMessage(
            message_id=f"f{index}-m{i}",
            seq=i,
            text=f"Caroline went to the support group on day {i}.",
            tokens=11,
            role="user",
            name="Caroline",
            ts="2023-05-08T13:56:00+00:00",
        )
        for i in range(n)
    )
    return ShortTermFlush(flush_index=index, segments=(Segment(0, msgs),))


def test_one_call_per_flush_with_the_pipelines_prompt():
    from benchmarks.llm_economy import source_messages

    flushes = [_flush(0, 3), _flush(1, 6)]
    usage = extraction_usage(flushes)
    assert usage["calls"] == 2
    expected = sum(
        chat_prompt_tokens(
            build_extraction_request(source_messages(f.messages)).messages, count_tokens
        )
        for f in flushes
    )
    assert usage["prompt_tokens"] == expected
    assert usage["completion_tokens"] > 0


def test_more_messages_cost_more_prompt_tokens_and_no_flush_costs_nothing():
    small = extraction_usage([_flush(0, 2)])["prompt_tokens"]
    big = extraction_usage([_flush(0, 20)])["prompt_tokens"]
    assert big > small
    assert extraction_usage([])["calls"] == 0
