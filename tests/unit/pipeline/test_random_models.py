"""The offline stand-in models the pipeline and rebuild tests rely on."""

from __future__ import annotations

import numpy as np

from tests.fixtures.random_models import build_random_llmlingua2, build_random_sentence_transformer


def test_random_sentence_model_loads_with_its_own_width(random_sentence_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(random_sentence_model_dir), device="cpu")
    assert model.get_embedding_dimension() == 128
    vectors = model.encode(["hiking in the mountains", "baking bread"], normalize_embeddings=True)
    assert vectors.shape == (2, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_builders_are_deterministic_and_reuse_a_finished_build(tmp_path, random_llmlingua2_dir):
    from transformers import AutoTokenizer

    again = build_random_llmlingua2(tmp_path)
    assert "bert-base-multilingual-cased" in again.name
    assert (again / "model.safetensors").read_bytes() == (
        random_llmlingua2_dir / "model.safetensors"
    ).read_bytes()
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert build_random_llmlingua2(tmp_path) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime
    # cased WordPiece: ordinary chat text tokenizes without [UNK]
    tokenizer = AutoTokenizer.from_pretrained(str(again))
    assert "[UNK]" not in tokenizer.tokenize("Hey Mel! Caroline's café – LGBTQ support, 2023.")


def test_sentence_builder_width_is_a_parameter(tmp_path):
    from sentence_transformers import SentenceTransformer

    path = build_random_sentence_transformer(tmp_path, dim=64)
    assert SentenceTransformer(str(path), device="cpu").get_embedding_dimension() == 64
