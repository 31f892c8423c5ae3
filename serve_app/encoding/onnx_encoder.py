"""A sentence-transformers BERT encoder run by ONNX Runtime, exported here from local weights.

Why: on this project's 2-core CPU machine a one-query MiniLM forward pass takes ~12.7 ms
through sentence-transformers and ~5 ms through ONNX Runtime on one thread, with the same
vectors (cosine 1.0). Nothing is downloaded: the graph is exported once from the packaged
weights with torch's exporter and cached on disk, keyed by a hash of the weights.

Only models whose sentence-transformers pipeline is Transformer -> mean Pooling (-> Normalize)
are accepted; anything else raises `UnsupportedModel` and callers keep sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class UnsupportedModel(ValueError):
    """The model is not a mean-pooled BERT-style sentence encoder."""


def _weights(model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).exists():
            return model_dir / name
    raise UnsupportedModel(f"no weights file in {model_dir}")


def _check_pipeline(model_dir: Path) -> int:
    """The max sequence length, after checking the pipeline is the one reproduced here."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise UnsupportedModel(f"pipeline {kinds} is not Transformer -> Pooling [-> Normalize]")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise UnsupportedModel(f"pooling {modes} is not mean pooling")
    st_config = model_dir / "sentence_bert_config.json"
    return (
        int(json.loads(st_config.read_text()).get("max_seq_length", 512))
        if st_config.exists()
        else 512
    )


def export(model_dir: Path, out: Path) -> None:
    """Write the transformer (token states out) as an ONNX graph with dynamic batch and length."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()

    class TokenStates(torch.nn.Module):
        # Keyword arguments: BertModel's positional order is not stable across versions.
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = torch.ones((1, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "token_states")}
    with torch.inference_mode():
        torch.onnx.export(
            TokenStates(model),
            (example, example, torch.zeros_like(example)),
            str(out),
            input_names=list(_INPUTS),
            output_names=["token_states"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def quantize(graph: Path, out: Path, per_channel: bool = True) -> None:
    """`graph` with its weights quantized to int8 (dynamic quantization: activations are
    quantized per batch at run time), written to `out`. One scale per output channel: with one
    per tensor, MiniLM's query vectors fall to cosine ~0.97 of the exact ones; per channel they
    stay at ~0.994, nearly as fast (`python -m benchmarks.query_encoder`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(graph), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)


def load_session(graph: Path, threads: int = 1, memory_arena: bool = False):
    """An ONNX Runtime session over `graph` on the CPU, `threads` threads for each operator."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ORT's arena never gives memory back and grows by doubling whenever a new batch shape
    # does not fit what it holds; without it tensors come from malloc, which replicas trim
    # (heap.py). Off by default: `python -m benchmarks.encoder_memory` compares the two.
    options.enable_cpu_mem_arena = memory_arena
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _write_once(target: Path, write) -> None:
    """`write(tmp)` beside `target`, then renamed: a replica killed mid-write leaves no
    half-written graph for the next one to load."""
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxSentenceEncoder:
    """texts -> L2-normalised float32 vectors, identical to the sentence-transformers model;
    with `int8`, from a graph whose weights are quantized to int8: about 2.5x faster per query
    here, vectors at cosine ~0.994 to the exact ones."""

    def __init__(
        self,
        model_dir: str | Path,
        cache_dir: str | Path,
        threads: int = 1,
        memory_arena: bool = False,
        int8: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        max_length = _check_pipeline(model_dir)
        weights = _weights(model_dir)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        graph = cache_dir / f"{model_dir.name}-{digest}.onnx"
        if not graph.exists():
            _write_once(graph, lambda tmp: export(model_dir, tmp))
        if int8:
            exact, graph = graph, cache_dir / f"{model_dir.name}-{digest}-int8-channel.onnx"
            if not graph.exists():
                _write_once(graph, lambda tmp: quantize(exact, tmp))
        self.session = load_session(graph, threads, memory_arena)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.graph = graph
        self.int8 = int8
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self.tokenizer.encode_batch(list(texts))
        feeds = {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
        }
        (states,) = self.session.run(None, feeds)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
