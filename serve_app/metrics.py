"""Pipeline figures of one worker batch, and their export through Ray's metrics API.

PostgreSQL holds the per-session and per-user token accounting; these counters are the same
increments, exported to Ray's Prometheus endpoint after each committed batch. Tags are
deployment-level only (profile, compression on/off; Serve adds deployment, replica and
application): a user or session tag would give every user a time series.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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


_COUNTERS = {
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


class PipelineMetrics:
    """Counters `memserve_pipeline_<field>` and a gauge of this replica's compression ratio."""

    TAG_KEYS = ("profile", "compression")

    def __init__(self, profile: str, compression: bool) -> None:
        # Serve's wrappers add the deployment, replica and application tags themselves.
        from ray.serve import metrics

        tags = {"profile": profile, "compression": "on" if compression else "off"}
        self.counters = {}
        for name, description in _COUNTERS.items():
            counter = metrics.Counter(
                f"memserve_pipeline_{name}", description=description, tag_keys=self.TAG_KEYS
            )
            # A copy each: Serve adds its own tags to the dict it is given.
            counter.set_default_tags(dict(tags))
            self.counters[name] = counter
        self.ratio = metrics.Gauge(
            "memserve_pipeline_compression_ratio",
            description="Tokens after compression per raw token, since this replica started.",
            tag_keys=self.TAG_KEYS,
        )
        self.ratio.set_default_tags(dict(tags))
        self.totals = PipelineTotals()

    def record(self, batch: PipelineTotals) -> None:
        self.totals.add(batch)
        for name, counter in self.counters.items():
            value = getattr(batch, name)
            if value:
                counter.inc(value)
        if self.totals.raw_tokens:
            self.ratio.set(self.totals.compressed_tokens / self.totals.raw_tokens)
