"""The embedding model: texts in, L2-normalised float32 vectors out (one per text)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serve_app.encoding.heap import releasing_heap
from serve_app.settings import resolve_embedding_model


class Embedder:
    """The model and nothing else: texts in, L2-normalised float32 vectors out."""

    def __init__(self, model: str, device: str = "cpu", torch_threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model_name = model
        self.model = SentenceTransformer(resolve_embedding_model(model), device=device)
        self.dim = int(self.model.get_embedding_dimension())
        # sentence-transformers sorts a call's texts by length and pads each mini-batch to its
        # longest: on CPU, mini-batches of 16 encode mixed lengths 1.3-1.5x faster than one
        # padded batch of 64 (measured here); a GPU wants the whole batch at once.
        self.encode_batch_size = 16 if device == "cpu" else 256

    @releasing_heap
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(
            list(texts),
            batch_size=max(min(len(texts), self.encode_batch_size), 1),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
