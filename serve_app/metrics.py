"""Pipeline figures of one worker batch, and the counters that export them.

PostgreSQL holds the per-session and per-user token accounting; these counters are the same
increments, exported (through `deployments/metrics.py`, Ray's metrics API) to Ray's
Prometheus endpoint after each committed batch. Tags are
deployment-level only (profile, compression on/off; Serve adds deployment, replica and
application): a user or session tag would give every user a time series.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Protocol


@dataclass
class PipelineTotals:
    """What one worker batch did (counted only for committed work)."""

    sessions: int = 0  # sessions whose work was committed
    messages: int = 0  # messages taken into buffers
    raw_tokens: int = 0
    compressed_tokens: int = 0  # tokens entering the buffers (= raw with compression off)
    segments: int = 0
    flushes: int = 0
    entries: int = 0
    done: int = 0  # messages whose memory entries now exist
    failed: int = 0  # messages given up on
    failed_sessions: int = 0  # sessions whose step failed this batch (retried later)
    llm_calls: int = 0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0

    def add(self, other: PipelineTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def did_work(self) -> bool:
        return self.sessions > 0


COUNTERS = {
    "messages": "Messages taken into the session buffers.",
    "raw_tokens": "cl100k_base tokens of messages taken in, before compression.",
    "compressed_tokens": "Tokens of messages after compression (equal to raw when off).",
    "segments": "Topic segments cut from the sensory buffers.",
    "flushes": "Short-term buffers turned into memory entries.",
    "entries": "Memory entries written.",
    "done": "Messages whose memory entries were written.",
    "failed": "Messages given up on after repeated failures.",
    "failed_sessions": "Session steps that failed and will be retried.",
    "llm_calls": "LLM calls made by memory construction.",
    "llm_input_tokens": "Tokens sent to the LLM.",
    "llm_output_tokens": "Tokens the LLM returned.",
}


class Counter(Protocol):
    def inc(self, value: float) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


def counter_name(field: str) -> str:
    return f"memserve_pipeline_{field}"


RATIO_NAME = "memserve_pipeline_compression_ratio"
RATIO_DESCRIPTION = "Tokens after compression per raw token, since this replica started."
TAG_KEYS = ("profile", "compression")


def metric_tags(profile: str, compression: bool) -> dict[str, str]:
    return {"profile": profile, "compression": "on" if compression else "off"}


class PipelineMetrics:
    """Counters `memserve_pipeline_<field>` and a gauge of this replica's compression ratio.

    The metric objects are handed in (one counter per name in `COUNTERS`), so the counting
    here runs the same against Ray's metrics API and against test doubles.
    """

    def __init__(self, counters: Mapping[str, Counter], ratio: Gauge) -> None:
        missing = set(COUNTERS) - set(counters)
        if missing:
            raise ValueError(f"no counter for {sorted(missing)}")
        self.counters = dict(counters)
        self.ratio = ratio
        self.totals = PipelineTotals()

    def record(self, batch: PipelineTotals) -> None:
        self.totals.add(batch)
        for name, counter in self.counters.items():
            value = getattr(batch, name)
            if value:
                counter.inc(value)
        if self.totals.raw_tokens:
            self.ratio.set(self.totals.compressed_tokens / self.totals.raw_tokens)
