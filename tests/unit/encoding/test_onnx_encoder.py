"""The ONNX encoder gives the sentence-transformers vectors of the packaged MiniLM."""

import json

import numpy as np
import pytest

from serve_app.encoding import load_encoders
from serve_app.encoding.onnx_encoder import OnnxSentenceEncoder, UnsupportedModel
from serve_app.settings import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model

TEXTS = [
    "I adopted a golden retriever named Max.",
    "What did Caroline research?",
    "x",
    "A much longer sentence about the trip to the mountains with friends last summer " * 8,
]


@pytest.fixture(scope="module")
def model_dir():
    return resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)


def test_same_vectors_as_sentence_transformers(model_dir, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    cache = tmp_path_factory.mktemp("onnx")
    encoder = OnnxSentenceEncoder(model_dir, cache)
    got = encoder.encode(TEXTS)
    want = SentenceTransformer(model_dir, device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-4)
    # The second replica loads the cached graph instead of exporting again.
    graph = encoder.graph
    mtime = graph.stat().st_mtime_ns
    again = OnnxSentenceEncoder(model_dir, cache)
    assert again.graph == graph and graph.stat().st_mtime_ns == mtime
    assert np.allclose(again.encode(TEXTS[:1]), got[:1], atol=1e-6)
    assert encoder.encode([]).shape == (0, 384)
    # Tensors come from malloc, which replicas trim: ORT's own arena never shrinks.
    assert not encoder.session.get_session_options().enable_cpu_mem_arena
    with_arena = OnnxSentenceEncoder(model_dir, cache, memory_arena=True)
    assert with_arena.session.get_session_options().enable_cpu_mem_arena


def test_int8_graph_is_quantized_once_and_close_to_the_exact_vectors(model_dir, tmp_path):
    exact = OnnxSentenceEncoder(model_dir, tmp_path)
    int8 = OnnxSentenceEncoder(model_dir, tmp_path, int8=True)
    assert int8.graph != exact.graph and int8.graph.name.endswith("-int8-channel.onnx")
    assert int8.int8 and not exact.int8
    # Quantized weights: a quarter of the size of the float32 graph, near enough.
    assert int8.graph.stat().st_size < 0.4 * exact.graph.stat().st_size
    got, want = int8.encode(TEXTS), exact.encode(TEXTS)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosine = (got * want).sum(axis=1)
    # One scale per output channel: with one per tensor, LoCoMo questions fell to ~0.97.
    assert cosine.min() > 0.96 and np.median(cosine) > 0.99, cosine
    assert not np.allclose(got, want, atol=1e-4)
    # Still a ranking by meaning: each text is nearest to its own exact vector.
    assert ((got @ want.T).argmax(axis=1) == np.arange(len(TEXTS))).all()
    mtime = int8.graph.stat().st_mtime_ns
    again = OnnxSentenceEncoder(model_dir, tmp_path, int8=True)
    assert again.graph == int8.graph and int8.graph.stat().st_mtime_ns == mtime


def test_an_int8_query_graph_comes_with_the_exact_graph_for_entries(model_dir, tmp_path):
    queries, entries = load_encoders(DEFAULT_EMBEDDING_MODEL, "onnx-int8", 1, tmp_path)
    assert queries.int8 and not entries.int8 and queries.dim == entries.dim == 384
    exact = OnnxSentenceEncoder(model_dir, tmp_path)
    assert np.allclose(entries.encode(TEXTS), exact.encode(TEXTS), atol=1e-6)
    # Without int8 one encoder does both.
    one, same = load_encoders(DEFAULT_EMBEDDING_MODEL, "onnx", 1, tmp_path)
    assert one is same and not one.int8


def test_refuses_other_poolings(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    cfg = copy / "1_Pooling" / "config.json"
    data = json.loads(cfg.read_text())
    data.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    cfg.write_text(json.dumps(data))
    with pytest.raises(UnsupportedModel, match="mean pooling"):
        OnnxSentenceEncoder(copy, tmp_path / "cache")
