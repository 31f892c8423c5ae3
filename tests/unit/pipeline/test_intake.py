"""Intake and the topic cut shared by the worker and re-extraction."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from serve_app.model.entries import EntryContext
from serve_app.model.messages import StoredMessage
from serve_app.pipeline.buffers import BufferedMessage
from serve_app.pipeline.compression import Compressed
from serve_app.pipeline.extractive import extractive_rows
from serve_app.pipeline.intake import Cutter, VectorCache, intake, stored_message
from serve_app.pipeline.segmentation import SegmentationConfig
from serve_app.pipeline.tokens import count_tokens
from tests.unit.ingest.doubles import bag_of_words


def test_vector_cache_survives_eviction_by_a_concurrent_call():
    """Regression: a text found cached before an await was evicted by a concurrent call that
    filled the cache meanwhile (KeyError seen at 10k messages, 4 sessions in parallel)."""
    cache = VectorCache(size=4)
    calls: list[list[str]] = []

    async def embed(texts: list[str]):
        calls.append(list(texts))
        await asyncio.sleep(0.01 if "slow" in texts[0] else 0)
        return [bag_of_words(t) for t in texts]

    async def run() -> tuple[np.ndarray, np.ndarray]:
        await cache.embed(["a"], embed)
        return await asyncio.gather(
            cache.embed(["a", "slow"], embed),  # "a" cached, "slow" awaited
            cache.embed([f"t{i}" for i in range(8)], embed),  # evicts "a" meanwhile
        )

    first, second = asyncio.run(run())
    assert np.allclose(first[0], bag_of_words("a")) and np.allclose(first[1], bag_of_words("slow"))
    assert second.shape[0] == 8
    assert ["a"] not in calls[1:]  # the cached vector was used, not embedded again
    assert len(cache._data) <= 4


def _messages() -> list[StoredMessage]:
    ts = datetime(2023, 5, 20, 10, 0, 0, 123456, tzinfo=UTC)
    return [
        StoredMessage("u", "s", "m0", 0, "user", "Ann", "I adopted a puppy named Max.", ts),
        StoredMessage("u", "s", "m1", 1, "assistant", None, "Congratulations!", ts),
    ]


async def _halve(texts: list[str]) -> list[Compressed]:
    out = []
    for t in texts:
        short = " ".join(t.split()[::2])
        out.append(Compressed(t, short, count_tokens(t), count_tokens(short)))
    return out


async def test_intake_without_compression_counts_the_original():
    intook = await intake(_messages(), None)
    assert [i.buffered.text for i in intook] == [m.content for m in _messages()]
    assert all(i.compressed is None and i.buffered.original is None for i in intook)
    assert [i.raw_tokens for i in intook] == [i.buffered.tokens for i in intook]


async def test_intake_with_compression_keeps_the_original_beside():
    [puppy, _] = await intake(_messages(), _halve)
    assert puppy.buffered.text == puppy.compressed == "I a named"
    assert puppy.buffered.original == "I adopted a puppy named Max."
    assert puppy.raw_tokens > puppy.buffered.tokens


async def test_a_buffered_message_gives_back_the_stored_one_entries_read():
    """Flushed entries are built from the buffers, without reading the messages again."""
    for compress in (None, _halve):
        intook = await intake(_messages(), compress)
        back = [stored_message("u", "s", i.buffered) for i in intook]
        assert back == _messages()


async def test_intake_gives_the_index_text_of_each_message_entry():
    stored = StoredMessage("u", "s", "p", -1, "user", "Bo", "Any news?", _messages()[0].ts)
    rows = extractive_rows(
        [_messages()],
        stored,
        EntryContext("u", "s", 1, "m"),
        unit="message_ctx",
        flush_index=0,
        topics={},
    )
    intook = await intake(_messages(), None, unit="message_ctx", previous={("u", "s"): stored})
    assert [i.buffered.index_text for i in intook] == [r.index_text for r in rows]
    assert "(after Bo: Any news?)" in intook[0].buffered.index_text
    # Window units and compression: the cut reads the message text.
    for compress, unit in ((None, "window2"), (_halve, "message_ctx")):
        intook = await intake(_messages(), compress, unit=unit)
        assert [i.buffered.index_text for i in intook] == [None, None]


async def test_the_cut_embeds_the_index_text_and_a_state_saved_without_it_loads():
    embedded: list[str] = []

    async def embed(texts: list[str]):
        embedded.extend(texts)
        return [bag_of_words(t) for t in texts]

    intook = await intake(_messages(), None, unit="message")
    window = [i.buffered for i in intook]
    cut = Cutter(embed, SegmentationConfig())
    await cut(window)
    assert embedded == [m.index_text for m in window]
    assert set(cut.vectors.peek([*embedded, "never seen"])) == set(embedded)
    old = {k: v for k, v in window[0].to_json().items() if k != "index_text"}
    assert BufferedMessage.from_json(old) == replace(window[0], index_text=None)


async def test_windows_of_index_texts_are_cut_with_their_own_thresholds():
    async def embed(texts: list[str]):
        return [bag_of_words(t) for t in texts]

    # One threshold set that never finds a boundary, one that always does.
    never = SegmentationConfig(similarity_threshold=-1.0, max_similarity_threshold=-1.0)
    always = SegmentationConfig(similarity_threshold=1.0, max_similarity_threshold=1.0)
    with_index = [i.buffered for i in await intake(_messages(), None, unit="message_ctx")]
    plain = [replace(m, index_text=None) for m in with_index]
    assert await Cutter(embed, never, entry_segmentation=always)(with_index) == [1]
    assert await Cutter(embed, always, entry_segmentation=never)(with_index) == []
    assert await Cutter(embed, always, entry_segmentation=never)(plain) == [1]
    # A window with one message lacking an index text (a blank one) is cut on the plain texts.
    mixed = [with_index[0], replace(with_index[1], index_text=None)]
    assert await Cutter(embed, never, entry_segmentation=always)(mixed) == []


async def test_prefetch_embeds_what_the_cut_reads_in_one_call():
    calls: list[list[str]] = []

    async def embed(texts: list[str]):
        calls.append(list(texts))
        return [bag_of_words(t) for t in texts]

    window = [i.buffered for i in await intake(_messages(), None, unit="message_ctx")]
    cut = Cutter(embed, SegmentationConfig())
    await cut.prefetch(window)
    await cut(window)
    assert calls == [[m.index_text for m in window]]
