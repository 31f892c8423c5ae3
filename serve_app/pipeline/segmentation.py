"""LightMem-style topic segmentation, as pure functions over precomputed signals.

Two signals over the n turns of a buffer (a turn is one message here: roles need not alternate):
- coarse: `attention[k]` = how much turn k+1 attends to turn k (the compressor model's sentence
  attention M[k+1, k]); LightMem takes its strict local maxima as candidate boundaries.
- fine: cosine similarity of consecutive turn embeddings; a boundary where it drops below a
  threshold, raised step by step until some drop is found.
Fine boundaries within `coarse_tolerance` turns of a coarse one are kept; if none is, all fine
boundaries are. With no attention (compression off), the fine boundaries alone decide.

A boundary b means a new segment starts at turn b (0 < b < n). The last segment of a buffer is
unfinished: `split_segments(keep_tail=True)` returns it separately so the caller carries it over
and the next call segments it again together with the turns that arrive after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from serve_app.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class SegmentationConfig:
    # LightMem's values: start at 0.2, raise by 0.05 up to 0.5, coarse/fine within 3 turns.
    similarity_threshold: float = 0.2
    max_similarity_threshold: float = 0.5
    threshold_step: float = 0.05
    coarse_tolerance: int = 3

    def __post_init__(self) -> None:
        if self.threshold_step <= 0:
            raise ValueError("threshold_step must be positive")
        if self.max_similarity_threshold < self.similarity_threshold:
            raise ValueError("max_similarity_threshold must be >= similarity_threshold")
        if self.coarse_tolerance < 0:
            raise ValueError("coarse_tolerance must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, *, entry_texts: bool = False) -> SegmentationConfig:
        """The thresholds for plain message texts, or (`entry_texts`) for entries' index texts,
        whose neighbours are more alike (settings.py says why and how they were chosen)."""
        if entry_texts:
            low = settings.segment_entry_similarity_threshold
            high = settings.segment_entry_max_similarity_threshold
        else:
            low = settings.segment_similarity_threshold
            high = settings.segment_max_similarity_threshold
        return cls(
            similarity_threshold=low,
            max_similarity_threshold=high,
            threshold_step=settings.segment_threshold_step,
            coarse_tolerance=settings.segment_coarse_tolerance,
        )

    def thresholds(self) -> list[float]:
        # Integer steps, so the list does not drift with repeated float addition.
        steps = int(
            np.floor(
                (self.max_similarity_threshold - self.similarity_threshold) / self.threshold_step
                + 1e-9
            )
        )
        return [
            round(self.similarity_threshold + i * self.threshold_step, 9) for i in range(steps + 1)
        ]


def consecutive_similarities(embeddings: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Cosine similarity between turn i and turn i+1, for i = 0..n-2."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (turns x dim), got shape {emb.shape}")
    if len(emb) < 2:
        return np.zeros(0)
    norms = np.linalg.norm(emb, axis=1)
    norms[norms == 0] = 1.0
    unit = emb / norms[:, None]
    return np.sum(unit[:-1] * unit[1:], axis=1)


def coarse_boundaries(attention: Sequence[float]) -> list[int]:
    """LightMem's coarse cut: k where attention[k] (turn k+1 -> k) is a strict local maximum."""
    a = list(attention)
    return [k for k in range(1, len(a) - 1) if a[k - 1] < a[k] > a[k + 1]]


def fine_boundaries(
    embeddings: np.ndarray | Sequence[Sequence[float]],
    config: SegmentationConfig = SegmentationConfig(),
) -> list[int]:
    """Turns b where similarity(b-1, b) falls below the lowest threshold that finds any drop."""
    sims = consecutive_similarities(embeddings)
    for threshold in config.thresholds():
        found = [i + 1 for i, s in enumerate(sims) if s < threshold]
        if found:
            return found
    return []


def segment_boundaries(
    embeddings: np.ndarray | Sequence[Sequence[float]],
    attention: Sequence[float] | None = None,
    config: SegmentationConfig = SegmentationConfig(),
) -> list[int]:
    """Sorted start indices (0 < b < n) of the segments after the first one."""
    n = len(embeddings)
    if attention is not None and len(attention) != max(0, n - 1):
        raise ValueError(
            f"attention needs {max(0, n - 1)} values for {n} turns, got {len(attention)}"
        )
    fine = fine_boundaries(embeddings, config)
    if attention is None or not fine:
        return fine
    coarse = coarse_boundaries(attention)
    kept = [f for f in fine if any(abs(f - c) <= config.coarse_tolerance for c in coarse)]
    return kept or fine


def split_segments(
    items: Sequence[T], boundaries: Sequence[int], *, keep_tail: bool
) -> tuple[list[list[T]], list[T]]:
    """Cut `items` at `boundaries` into (finished segments, carried-over tail).

    With `keep_tail`, the part after the last boundary is returned as the tail (it may still
    grow); with no boundary at all nothing would ever finish, so the whole buffer is one
    finished segment, as in LightMem. Without `keep_tail` everything is finished.
    """
    n = len(items)
    cuts = sorted({b for b in boundaries if 0 < b < n})
    if len(cuts) != len(boundaries) or list(boundaries) != cuts:
        raise ValueError(f"boundaries must be increasing, unique and within (0, {n}): {boundaries}")
    starts = [0, *cuts]
    ends = [*cuts, n]
    segments = [list(items[a:b]) for a, b in zip(starts, ends, strict=True) if b > a]
    if keep_tail and cuts:
        return segments[:-1], segments[-1]
    return segments, []
