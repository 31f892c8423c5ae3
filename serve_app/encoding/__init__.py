"""Sentence encoders run inside a replica: ONNX Runtime when the model allows it, else torch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def load_encoder(model: str, backend: str, threads: int, cache_dir: Path) -> Encoder:
    """The model for in-process encoding: ONNX Runtime (`backend="onnx"`, or `"onnx-int8"` for
    its int8-quantized graph) falls back to torch for a model it cannot reproduce, and says so
    in the log."""
    from serve_app.encoding.torch_encoder import Embedder
    from serve_app.settings import resolve_embedding_model

    if backend in ("onnx", "onnx-int8"):
        from serve_app.encoding.onnx_encoder import OnnxSentenceEncoder, UnsupportedModel

        try:
            return OnnxSentenceEncoder(
                resolve_embedding_model(model), cache_dir, threads, int8=backend == "onnx-int8"
            )
        except (UnsupportedModel, OSError) as e:
            logger.warning("ONNX encoder unavailable for %s (%s); using torch", model, e)
    return Embedder(model, "cpu", threads)


def load_encoders(
    model: str, backend: str, threads: int, cache_dir: Path
) -> tuple[Encoder, Encoder]:
    """(queries, entries). One encoder for both, except an int8 query graph: entries
    embedded here (memory edits, offline jobs' changes, a generation's catch-up sweep) then go
    through the exact graph, so the index keeps the vectors the Embedder group writes."""
    queries = load_encoder(model, backend, threads, cache_dir)
    if not getattr(queries, "int8", False):
        return queries, queries
    return queries, load_encoder(model, "onnx", threads, cache_dir)
