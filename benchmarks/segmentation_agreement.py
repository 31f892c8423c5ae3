"""Topic cut on entry index texts against LightMem's cut of the plain texts, on LoCoMo.

The worker cuts each sensory window into topics on the vectors of its messages. By default
(extractive path, no compression) it embeds each message's entry index text (date, speaker,
the previous turn) so the entry write reuses the vector; LightMem cuts the plain message
texts. Both cuts run here in process with the worker's own code (intake, `SessionBuffers`,
`Cutter`, the service's MiniLM class), one buffer state per LoCoMo session, flushed at its
end. Printed: how many boundaries each cut finds, how many coincide (precision, recall and F1
of the entry-text cut against the plain-text one, and the F1 of as many boundaries placed at
random), and the median similarity of neighbouring turns in both. `--grid` adds the F1 of
other entry-text threshold ranges (how the defaults were chosen).

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.segmentation_agreement [--grid]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import load_minilm, machine_info, relpath, write_result
from benchmarks.locomo_data import LocomoConversation, load_conversations
from serve_app.model.messages import StoredMessage
from serve_app.pipeline.buffers import BufferConfig, BufferedMessage, SessionBuffers
from serve_app.pipeline.intake import Cutter, VectorCache, intake
from serve_app.pipeline.segmentation import SegmentationConfig, consecutive_similarities
from serve_app.settings import Settings


def stored_sessions(conv: LocomoConversation) -> list[list[StoredMessage]]:
    """Each LoCoMo session as the worker reads it (the HTTP benchmark's message shape)."""
    return [
        [
            StoredMessage("u", s.session_id, t.message_id, i, "user", t.speaker, t.content, s.ts)
            for i, t in enumerate(s.turns)
        ]
        for s in conv.sessions
    ]


def cached_minilm():
    """The service's MiniLM behind the pipeline's text-keyed cache, sized to hold every text of
    the run: each text is encoded once for all the cuts."""
    model = load_minilm(2)
    cache = VectorCache(size=1 << 20)

    async def encode(texts: list[str]):
        return model.encode(texts)

    async def embed(texts: list[str]):
        return await cache.embed(texts, encode)

    return embed


async def boundaries(
    sessions: Sequence[list[BufferedMessage]], cut: Cutter, config: BufferConfig
) -> list[set[str]]:
    """Per session, the ids of the messages that start a topic (the first one excluded)."""
    out = []
    for messages in sessions:
        state = SessionBuffers(config)
        flushes = await state.add_async(messages, cut)
        flushes += await state.flush_async(cut)
        starts = {s.messages[0].message_id for f in flushes for s in f.segments}
        out.append(starts - {messages[0].message_id})
    return out


def agreement(reference: list[set[str]], found: list[set[str]], sizes: list[int]) -> dict:
    tp = sum(len(r & f) for r, f in zip(reference, found, strict=True))
    n_ref, n_found = sum(map(len, reference)), sum(map(len, found))
    # Expected hits of len(f) positions drawn at random among a session's n - 1 gaps.
    chance_tp = sum(
        len(f) * len(r) / (n - 1) for r, f, n in zip(reference, found, sizes, strict=True) if n > 1
    )

    def f1(hits: float) -> float:
        return round(2 * hits / (n_ref + n_found), 3) if n_ref + n_found else 1.0

    return {
        "boundaries": n_found,
        "reference_boundaries": n_ref,
        "precision": round(tp / n_found, 3) if n_found else None,
        "recall": round(tp / n_ref, 3) if n_ref else None,
        "f1": f1(tp),
        "f1_at_random": f1(chance_tp),
    }


async def run(data: Path, grid: bool) -> dict[str, Any]:
    settings = Settings()
    config = BufferConfig(settings.sensory_max_tokens, settings.short_term_max_tokens)
    stored = [s for conv in load_conversations(data) for s in stored_sessions(conv)]
    sizes = [len(s) for s in stored]
    plain = [[i.buffered for i in await intake(s, None)] for s in stored]
    entry = [[i.buffered for i in await intake(s, None, unit=settings.entry_unit)] for s in stored]
    embed = cached_minilm()
    lightmem = SegmentationConfig.from_settings(settings)
    on_entries = SegmentationConfig.from_settings(settings, entry_texts=True)
    reference = await boundaries(plain, Cutter(embed, lightmem), config)
    found = await boundaries(entry, Cutter(embed, lightmem, entry_segmentation=on_entries), config)

    async def median_similarity(sessions: list[list[BufferedMessage]]) -> float:
        sims = [
            consecutive_similarities(await embed([m.index_text or m.text for m in s]))
            for s in sessions
        ]
        return round(float(np.median(np.concatenate(sims))), 3)

    result: dict[str, Any] = {
        "benchmark": "segmentation_agreement",
        "machine": machine_info(),
        "sessions": len(stored),
        "turns": sum(sizes),
        "entry_unit": settings.entry_unit,
        "plain_thresholds": [lightmem.similarity_threshold, lightmem.max_similarity_threshold],
        "entry_thresholds": [on_entries.similarity_threshold, on_entries.max_similarity_threshold],
        "neighbour_similarity_median": {
            "plain": await median_similarity(plain),
            "entry": await median_similarity(entry),
        },
        "entry_cut_vs_plain_cut": agreement(reference, found, sizes),
        # The entry texts cut with LightMem's thresholds: why they have their own.
        "entry_cut_lightmem_thresholds": agreement(
            reference, await boundaries(entry, Cutter(embed, lightmem), config), sizes
        ),
    }
    if grid:
        rows = []
        for low in np.arange(0.3, 0.81, 0.05):
            for high in np.arange(low, 0.96, 0.05):
                seg = SegmentationConfig(round(low, 2), round(high, 2))
                cut = Cutter(embed, lightmem, entry_segmentation=seg)
                rows.append(
                    {
                        "thresholds": [seg.similarity_threshold, seg.max_similarity_threshold],
                        **agreement(reference, await boundaries(entry, cut, config), sizes),
                    }
                )
        result["grid"] = sorted(rows, key=lambda r: -r["f1"])
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/locomo-dev"))
    p.add_argument("--grid", action="store_true", help="F1 of other entry-text thresholds")
    p.add_argument("--out-dir", type=Path)
    args = p.parse_args(argv)
    result = asyncio.run(run(args.data, args.grid))
    result["json"] = relpath(write_result("segmentation_agreement", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
