"""Pipeline counters: each committed batch's figures added to the right counter."""

from __future__ import annotations

import pytest

from serve_app.metrics import COUNTERS, PipelineMetrics, PipelineTotals


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, value: float) -> None:
        self.value += value


class FakeGauge:
    def __init__(self) -> None:
        self.values: list[float] = []

    def set(self, value: float) -> None:
        self.values.append(value)


def make_metrics() -> tuple[PipelineMetrics, dict[str, FakeCounter], FakeGauge]:
    counters = {name: FakeCounter() for name in COUNTERS}
    ratio = FakeGauge()
    return PipelineMetrics(counters, ratio), counters, ratio


def test_batches_add_up_in_the_counters_and_the_ratio_is_since_start():
    metrics, counters, ratio = make_metrics()
    metrics.record(PipelineTotals(sessions=1, messages=2, raw_tokens=100, compressed_tokens=60))
    metrics.record(PipelineTotals(sessions=1, messages=3, raw_tokens=100, compressed_tokens=40))
    assert counters["messages"].value == 5
    assert counters["raw_tokens"].value == 200
    assert counters["compressed_tokens"].value == 100
    assert counters["entries"].value == 0
    assert ratio.values == [pytest.approx(0.6), pytest.approx(0.5)]
    assert metrics.totals.sessions == 2


def test_no_ratio_before_any_token():
    metrics, _, ratio = make_metrics()
    metrics.record(PipelineTotals(sessions=1, failed_sessions=1))
    assert ratio.values == []


def test_every_counted_field_is_a_totals_field_and_needs_a_counter():
    assert set(COUNTERS) <= set(PipelineTotals.__dataclass_fields__)
    with pytest.raises(ValueError, match="llm_calls"):
        PipelineMetrics({n: FakeCounter() for n in COUNTERS if n != "llm_calls"}, FakeGauge())
