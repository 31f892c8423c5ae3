"""Token economy of the LightMem pipeline on LoCoMo: compression, topic segments, flushes.

In process, no Ray. Every turn is compressed with LLMLingua-2 (by default a small random BERT
standing in for the real weights, which cannot be downloaded here), then fed through the
sensory/short-term buffers with LightMem's segmentation (compressor attention + MiniLM
embeddings). The same is done with compression off (original text, embeddings alone).
Each flush is one memory-construction call (one LLM call when an LLM is configured).

Two buffer scopes: `stream` keeps one buffer state per conversation and flushes at the end;
`per_session` keeps one per LoCoMo session and flushes at each session's end.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.token_economy \
        --data ../shared/data/locomo-dev [--model DIR] [--out benchmarks/results/token_economy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.locomo_data import LocomoConversation, load_conversations
from serve_app.pipeline.buffers import BufferConfig, BufferedMessage, SessionBuffers
from serve_app.pipeline.compression import Compressed, Compressor
from serve_app.pipeline.segmentation import SegmentationConfig, segment_boundaries
from serve_app.pipeline.tokens import count_tokens
from serve_app.settings import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model

DEFAULT_CACHE = Path(".cache/random-models")


def compress_conversation(
    compressor: Compressor, conv: LocomoConversation, rate: float, force: Sequence[str], batch: int
) -> tuple[list[Compressed], float]:
    texts = [t.content for s in conv.sessions for t in s.turns]
    start = time.perf_counter()
    out: list[Compressed] = []
    for i in range(0, len(texts), batch):
        out += compressor.compress_batch(texts[i : i + batch], rate, force)
    return out, time.perf_counter() - start


def buffered(conv: LocomoConversation, texts: Sequence[str]) -> list[list[BufferedMessage]]:
    """Per LoCoMo session, the turns as buffer messages carrying `texts` (seq = global index)."""
    sessions, i = [], 0
    for s in conv.sessions:
        msgs = []
        for t in s.turns:
            msgs.append(
                BufferedMessage(
                    message_id=t.message_id,
                    seq=i,
                    text=texts[i],
                    tokens=count_tokens(texts[i]),
                    role="user",
                    name=t.speaker,
                    ts=s.ts.isoformat(),
                )
            )
            i += 1
        sessions.append(msgs)
    return sessions


def run_buffers(
    sessions: list[list[BufferedMessage]],
    embeddings: np.ndarray,
    compressor: Compressor | None,
    buffer_config: BufferConfig,
    seg_config: SegmentationConfig,
    scope: str,
    llm: bool = False,
) -> dict[str, Any]:
    windows: list[int] = []

    def cut(window: Sequence[BufferedMessage]) -> list[int]:
        windows.append(len(window))
        emb = embeddings[[m.seq for m in window]]
        attention = (
            compressor.consecutive_attention([m.text for m in window]) if compressor else None
        )
        return segment_boundaries(emb, attention, seg_config)

    flushes = []
    if scope == "stream":
        state = SessionBuffers(config=buffer_config)
        for msgs in sessions:
            flushes += state.add(msgs, cut)
        flushes += state.flush(cut)
    else:
        for msgs in sessions:
            state = SessionBuffers(config=buffer_config)
            flushes += state.add(msgs, cut) + state.flush(cut)
    segments = [s for f in flushes for s in f.segments]
    n_messages = sum(len(s.messages) for s in segments)
    assert n_messages == sum(len(m) for m in sessions), "a message went missing"
    out = {
        "segments": len(segments),
        "flushes": len(flushes),
        "sensory_cuts": len(windows),
        "messages_per_segment": round(n_messages / max(1, len(segments)), 2),
        "tokens_per_flush": round(sum(f.tokens for f in flushes) / max(1, len(flushes)), 1),
    }
    if llm:
        # One extraction call per flush, built by the pipeline's code, answered by the double.
        from benchmarks.llm_economy import extraction_usage

        out["llm"] = extraction_usage(flushes)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/locomo-dev")
    parser.add_argument("--model", help="compressor model dir or HF id (default: random BERT)")
    parser.add_argument("--rate", type=float, default=0.6)
    parser.add_argument("--force-tokens", nargs="*", default=["\n", ".", "?", "!"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sensory-max-tokens", type=int, default=512)
    parser.add_argument("--short-term-max-tokens", type=int, default=512)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument(
        "--no-llm", action="store_true", help="skip counting LLM calls/tokens (engine double)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.torch_threads)
    model = args.model
    if model is None:
        from tests.fixtures.random_models import build_random_llmlingua2

        model = str(build_random_llmlingua2(DEFAULT_CACHE))
    compressor = Compressor(model, "cpu")
    embedder = SentenceTransformer(resolve_embedding_model(DEFAULT_EMBEDDING_MODEL), device="cpu")
    buffer_config = BufferConfig(args.sensory_max_tokens, args.short_term_max_tokens)
    seg_config = SegmentationConfig()

    rows = []
    for conv in load_conversations(args.data):
        compressed, seconds = compress_conversation(
            compressor, conv, args.rate, args.force_tokens, args.batch
        )
        originals = [c.original for c in compressed]
        shortened = [c.compressed for c in compressed]
        row: dict[str, Any] = {
            "conversation": conv.conv_id,
            "sessions": len(conv.sessions),
            "messages": len(compressed),
            "tokens_in": sum(c.tokens_in for c in compressed),
            "tokens_out": sum(c.tokens_out for c in compressed),
            "compress_seconds": round(seconds, 2),
        }
        row["compression_ratio"] = round(row["tokens_out"] / row["tokens_in"], 4)
        for mode, texts, attn in (("on", shortened, compressor), ("off", originals, None)):
            emb = embedder.encode(texts, batch_size=64, normalize_embeddings=True)
            for scope in ("stream", "per_session"):
                row[f"compression_{mode}_{scope}"] = run_buffers(
                    buffered(conv, texts),
                    emb,
                    attn,
                    buffer_config,
                    seg_config,
                    scope,
                    llm=not args.no_llm,
                )
        rows.append(row)
        print(json.dumps(row), flush=True)

    total_in = sum(r["tokens_in"] for r in rows)
    total_out = sum(r["tokens_out"] for r in rows)
    summary: dict[str, Any] = {
        "conversations": len(rows),
        "messages": sum(r["messages"] for r in rows),
        "tokens_in": total_in,
        "tokens_out": total_out,
        "compression_ratio": round(total_out / total_in, 4),
        "compress_msgs_per_s": round(
            sum(r["messages"] for r in rows) / sum(r["compress_seconds"] for r in rows), 1
        ),
    }
    for key in [k for k in rows[0] if k.startswith("compression_o")]:
        summary[key] = {
            "segments_per_conversation": round(np.mean([r[key]["segments"] for r in rows]), 1),
            "flushes_per_conversation": round(np.mean([r[key]["flushes"] for r in rows]), 1),
            "total_flushes": sum(r[key]["flushes"] for r in rows),
        }
        if all("llm" in r[key] for r in rows):
            summary[key]["llm"] = {
                f: sum(r[key]["llm"][f] for r in rows)
                for f in ("calls", "prompt_tokens", "completion_tokens")
            }
    result = {
        "benchmark": "token_economy",
        "data": args.data,
        "compressor_model": model,
        "random_model": args.model is None,
        "rate": args.rate,
        "force_tokens": args.force_tokens,
        "sensory_max_tokens": args.sensory_max_tokens,
        "short_term_max_tokens": args.short_term_max_tokens,
        "embedding_model": DEFAULT_EMBEDDING_MODEL,
        "summary": summary,
        "conversations": rows,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
