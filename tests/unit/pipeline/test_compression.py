"""The compressor through the real llmlingua code, with a small random BERT standing in."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from serve_app.pipeline.compression import (
    MAX_FORCE_TOKENS,
    Compressor,
    CompressorUnavailable,
    compressor_available,
)
from serve_app.pipeline.tokens import count_tokens

TEXTS = [
    "Hey Mel! Good to see you! How have you been? I went to the LGBTQ support group yesterday "
    "and it was powerful.",
    "I painted a lake sunrise last year; painting is my way to express myself.",
    "Did you go hiking? Where did you go? Was it fun?\nI went to the lake. What did you see?\n"
    "Yes, lots of birds. Really? Which ones?",
    "Short one.",
    "My kids loved the camping trip: we roasted marshmallows, told stories and watched the stars "
    "until midnight, then hiked to the waterfall the next morning.",
]


def is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(any(word == other for other in remaining) for word in short)


# -- availability ---------------------------------------------------------------------------------
def test_no_model_is_reported_with_a_reason(offline_models_env):
    assert not compressor_available(None)
    assert "no compressor model" in compressor_available("").reason


def test_unsupported_family_is_rejected(offline_models_env, tmp_path):
    result = compressor_available(str(tmp_path))
    assert not result and "bert-base-multilingual-cased" in result.reason


def test_missing_or_incomplete_directory(offline_models_env, tmp_path):
    missing = tmp_path / "nothing-bert-base-multilingual-cased"
    assert "does not exist" in compressor_available(str(missing)).reason
    missing.mkdir()
    (missing / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert "no weights" in compressor_available(str(missing)).reason


def test_uncached_hub_model_is_off_without_downloads(offline_models_env):
    result = compressor_available("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")
    assert not result and "not in the local Hugging Face cache" in result.reason
    with pytest.raises(CompressorUnavailable, match="Hugging Face cache"):
        Compressor("microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")


def test_random_model_directory_is_available(random_llmlingua2_dir):
    result = compressor_available(str(random_llmlingua2_dir))
    assert result and result.path == str(random_llmlingua2_dir)


# -- compression ----------------------------------------------------------------------------------
def test_batch_keeps_originals_and_counts_tokens(random_compressor):
    out = random_compressor.compress_batch(TEXTS, rate=0.6)
    assert [c.original for c in out] == TEXTS
    for c in out:
        assert c.tokens_in == count_tokens(c.original)
        assert c.tokens_out == count_tokens(c.compressed)
        assert c.compressed and c.tokens_out <= c.tokens_in
        # llmlingua-2 only drops words: the kept ones are a subsequence of the original's
        assert is_subsequence(re.findall(r"\w+", c.compressed), re.findall(r"\w+", c.original))


def test_batching_equals_one_at_a_time(random_compressor):
    batched = random_compressor.compress_batch(TEXTS, rate=0.6)
    single = [random_compressor.compress_batch([t], rate=0.6)[0] for t in TEXTS]
    assert batched == single


def test_rate_controls_how_much_is_kept(random_compressor):
    tokens_in = sum(count_tokens(t) for t in TEXTS)
    kept = {
        rate: sum(c.tokens_out for c in random_compressor.compress_batch(TEXTS, rate=rate))
        for rate in (0.3, 0.6, 0.9)
    }
    assert kept[0.3] < kept[0.6] < kept[0.9] <= tokens_in
    assert 0.35 <= kept[0.6] / tokens_in <= 0.75


def test_force_tokens_are_always_kept(random_compressor):
    text = TEXTS[2]
    forced = random_compressor.compress_batch([text], rate=0.3, force_tokens=["?", "\n"])[0]
    assert forced.compressed.count("?") == text.count("?")
    assert forced.compressed.count("\n") == text.count("\n")
    plain = random_compressor.compress_batch([text], rate=0.3)[0]
    assert plain.compressed.count("?") < text.count("?")


def test_texts_llmlingua_cannot_handle_pass_through(random_compressor):
    texts = ["", "   ", "\U0001f31f", "a <|endoftext|> b", "Short one."]
    out = random_compressor.compress_batch(texts, rate=0.5)
    assert [c.compressed for c in out[:4]] == texts[:4]
    assert out[4].compressed != texts[4]  # the ordinary text in the same batch is compressed


def test_rate_one_is_identity(random_compressor):
    out = random_compressor.compress_batch(TEXTS, rate=1.0)
    assert [c.compressed for c in out] == TEXTS


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_bad_rate(random_compressor, rate):
    with pytest.raises(ValueError):
        random_compressor.compress_batch(TEXTS, rate=rate)


def test_too_many_force_tokens(random_compressor):
    with pytest.raises(ValueError):
        random_compressor.compress_batch(
            TEXTS, rate=0.5, force_tokens=[f"t{i}" for i in range(MAX_FORCE_TOKENS + 1)]
        )


# -- sentence attention ---------------------------------------------------------------------------
SENTENCES = [
    "I went hiking in the mountains last weekend with my sister.",
    "The trail was steep but the view from the summit was worth it.",
    "Anyway, how is your new job at the bakery going these days?",
    "It is busy: we bake three hundred loaves of bread every morning.",
    "That sounds exhausting, do you still enjoy it after a month?",
]


def test_sentence_attention_matrix(random_compressor):
    m = random_compressor.sentence_attention(SENTENCES)
    assert m.shape == (5, 5)
    assert np.allclose(np.triu(m), 0)  # only earlier sentences are attended to
    assert np.allclose(m[1:].sum(axis=1), 1)  # normalised over earlier sentences
    assert m[1, 0] == pytest.approx(1.0)


def test_attention_batch_matches_single_windows(random_compressor):
    windows = [SENTENCES, SENTENCES[:3], SENTENCES[2:]]
    batched = random_compressor.consecutive_attention_batch(windows)
    for window, values in zip(windows, batched, strict=True):
        assert len(values) == len(window) - 1
        assert np.allclose(values, random_compressor.consecutive_attention(window), atol=1e-5)


def test_attention_trims_windows_longer_than_the_model(random_compressor):
    long_window = ["word " * 400, "other words " * 200, "a short closing sentence here"]
    values = random_compressor.consecutive_attention(long_window)
    assert len(values) == 2 and all(np.isfinite(values))
    # the model's default attention implementation is restored after the eager pass
    assert random_compressor._pc.model.config._attn_implementation != "eager"
    assert random_compressor.compress_batch(TEXTS[:1], rate=0.6)[0].tokens_out > 0
