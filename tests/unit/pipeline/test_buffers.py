from __future__ import annotations

import json
import random
from collections.abc import Sequence

import pytest

from serve_app.pipeline.buffers import (
    BufferConfig,
    BufferedMessage,
    SessionBuffers,
    ShortTermFlush,
)

CONFIG = BufferConfig(sensory_max_tokens=120, short_term_max_tokens=200)


def make_messages(n: int = 120, seed: int = 7) -> list[BufferedMessage]:
    """Messages with varied sizes and topic runs of 2..9 messages (topic in the text)."""
    rng = random.Random(seed)
    messages, topic, left = [], 0, rng.randint(2, 9)
    for seq in range(n):
        if left == 0:
            topic, left = topic + 1, rng.randint(2, 9)
        left -= 1
        messages.append(
            BufferedMessage(
                message_id=f"m{seq}",
                seq=seq,
                text=f"topic {topic}: message {seq}",
                tokens=rng.randint(3, 45),
                role=rng.choice(["user", "assistant", "user"]),  # roles need not alternate
                name=rng.choice(["Caroline", "Melanie"]),
                ts=f"2023-05-08T13:{seq // 60:02d}:{seq % 60:02d}+00:00",
            )
        )
    return messages


def topic_of(message: BufferedMessage) -> int:
    return int(message.text.split(":")[0].split()[1])


class TopicCut:
    """A perfect segmenter: boundaries where the topic changes. Records every window."""

    def __init__(self) -> None:
        self.windows: list[list[BufferedMessage]] = []

    def __call__(self, window: Sequence[BufferedMessage]) -> list[int]:
        self.windows.append(list(window))
        return [i for i in range(1, len(window)) if topic_of(window[i]) != topic_of(window[i - 1])]


def flushed_ids(flushes: list[ShortTermFlush]) -> list[str]:
    return [m.message_id for f in flushes for m in f.messages]


def run_all(messages, config=CONFIG, chunk: int | None = None, roundtrip: bool = False):
    buffers, cut, flushes = SessionBuffers(config=config), TopicCut(), []
    chunk = chunk or len(messages)
    for start in range(0, len(messages), chunk):
        flushes += buffers.add(messages[start : start + chunk], cut)
        if roundtrip:
            buffers = SessionBuffers.from_json(json.loads(json.dumps(buffers.to_json())), config)
    flushes += buffers.flush(cut)
    return flushes, cut, buffers


def test_every_message_comes_out_once_in_order():
    messages = make_messages()
    flushes, _, buffers = run_all(messages)
    assert flushed_ids(flushes) == [m.message_id for m in messages]
    assert buffers.is_empty
    assert [f.flush_index for f in flushes] == list(range(len(flushes)))
    topics = [s.topic_index for f in flushes for s in f.segments]
    assert topics == list(range(len(topics)))


def test_sensory_windows_respect_the_threshold():
    messages = make_messages()
    _, cut, _ = run_all(messages)
    by_id = {m.message_id: i for i, m in enumerate(messages)}
    for window in cut.windows[:-1]:  # the last one is the forced flush
        tokens = sum(m.tokens for m in window)
        assert tokens <= CONFIG.sensory_max_tokens
        following = messages[by_id[window[-1].message_id] + 1]
        assert tokens + following.tokens > CONFIG.sensory_max_tokens  # it was full


def test_short_term_flushes_respect_the_threshold():
    flushes, _, _ = run_all(make_messages())
    assert len(flushes) > 3
    for flush, following in zip(flushes, flushes[1:], strict=False):
        assert flush.tokens <= CONFIG.short_term_max_tokens or len(flush.segments) == 1
        # it was flushed because the next segment would not fit
        assert flush.tokens + following.segments[0].tokens > CONFIG.short_term_max_tokens


def test_segments_follow_the_cut_and_carry_the_tail():
    flushes, cut, _ = run_all(make_messages())
    for segment in (s for f in flushes for s in f.segments):
        assert len({topic_of(m) for m in segment.messages}) == 1
    # a topic still running at a cut was carried over: some window starts with the previous tail
    carried = [
        w
        for prev, w in zip(cut.windows, cut.windows[1:], strict=False)
        if w[0].message_id in {m.message_id for m in prev}
    ]
    assert carried


@pytest.mark.parametrize("split", [1, 17, 40, 77, 119])
def test_restart_mid_conversation_gives_identical_results(split):
    messages = make_messages()
    expected, _, _ = run_all(messages)

    first = SessionBuffers(config=CONFIG)
    flushes = first.add(messages[:split], TopicCut())
    saved = json.dumps(first.to_json())  # what the worker persists
    resumed = SessionBuffers.from_json(json.loads(saved), CONFIG)
    # the queue redelivers a few already-processed messages along with the new ones
    flushes += resumed.add(messages[max(0, split - 5) :], TopicCut())
    flushes += resumed.flush(TopicCut())
    assert flushes == expected


def test_small_chunks_with_a_roundtrip_after_each():
    messages = make_messages()
    expected, _, _ = run_all(messages)
    chunked, _, _ = run_all(messages, chunk=3, roundtrip=True)
    assert chunked == expected


def test_duplicates_are_ignored():
    messages = make_messages(20)
    buffers = SessionBuffers(config=CONFIG)
    buffers.add(messages[:10], TopicCut())
    assert buffers.push(messages[:10]) == 0
    assert buffers.push(list(reversed(messages[10:]))) == 10  # out of order is sorted by seq
    assert [m.seq for m in buffers.pending] == list(range(10, 20))
    with pytest.raises(ValueError):
        SessionBuffers().push([messages[0], messages[0]])


def test_flush_forces_everything_out():
    messages = make_messages(6)
    buffers = SessionBuffers(config=BufferConfig(sensory_max_tokens=10_000))
    assert buffers.add(messages, TopicCut()) == []  # nothing is full yet
    assert len(buffers.sensory) == 6
    flushes = buffers.flush(TopicCut())
    assert flushed_ids(flushes) == [m.message_id for m in messages]
    assert buffers.is_empty and buffers.flush(TopicCut()) == []


def test_oversized_message_is_taken_alone():
    small = make_messages(4)
    big = BufferedMessage(
        "big", 4, "topic 99: long", 1000, "user", None, "2023-05-08T14:00:00+00:00"
    )
    after = BufferedMessage("after", 5, "topic 99: x", 5, "user", None, "2023-05-08T14:00:01+00:00")
    cut = TopicCut()
    buffers = SessionBuffers(config=CONFIG)
    flushes = buffers.add([*small, big, after], cut) + buffers.flush(cut)
    assert flushed_ids(flushes) == ["m0", "m1", "m2", "m3", "big", "after"]
    assert ["big"] in [[m.message_id for m in w] for w in cut.windows]


async def test_async_loop_matches_sync():
    messages = make_messages()
    expected, _, _ = run_all(messages)
    sync_cut = TopicCut()

    async def cut(window):
        return sync_cut(window)

    buffers = SessionBuffers(config=CONFIG)
    flushes = await buffers.add_async(messages[:50], cut)
    flushes += await buffers.add_async(messages[50:], cut)
    flushes += await buffers.flush_async(cut)
    assert flushes == expected


def test_state_json_roundtrip_and_version():
    buffers = SessionBuffers(config=CONFIG)
    buffers.add(make_messages(30), TopicCut())
    data = json.loads(json.dumps(buffers.to_json()))
    restored = SessionBuffers.from_json(data, CONFIG)
    assert restored == buffers
    assert SessionBuffers.from_json(None, CONFIG) == SessionBuffers(config=CONFIG)
    with pytest.raises(ValueError):
        SessionBuffers.from_json({**data, "version": 99}, CONFIG)


def test_thresholds_are_configurable():
    messages = make_messages()
    small, _, _ = run_all(messages, BufferConfig(sensory_max_tokens=60, short_term_max_tokens=100))
    large, _, _ = run_all(messages, BufferConfig(sensory_max_tokens=400, short_term_max_tokens=800))
    assert len(small) > len(large)
    assert BufferConfig().short_term_max_tokens == 512
    with pytest.raises(ValueError):
        BufferConfig(short_term_max_tokens=0)
