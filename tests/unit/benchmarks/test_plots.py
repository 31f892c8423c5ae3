"""Plots and the markdown summary, from small hand-made results in each script's JSON shape."""

from __future__ import annotations

import pytest

from benchmarks import plots
from benchmarks.run_all import summary_markdown

CATS = ("multi_hop", "temporal", "open_domain", "single_hop")


def _recall(base: float) -> dict:
    return {f"recall@{k}": round(min(1.0, base + k / 100), 3) for k in (1, 5, 10, 20)}


def _http() -> dict:  # benchmarks/locomo_retrieval.py
    block = {**_recall(0.5), "by_category": {c: {"questions": 3, **_recall(0.4)} for c in CATS}}
    return {"hybrid": block, "bm25": block}


def _offline() -> dict:  # benchmarks/locomo_offline.py
    v = {
        "overall": _recall(0.3),
        "per_category": {
            f"{i}_{c}": {"questions": 3, **_recall(0.2)} for i, c in enumerate(CATS, 1)
        },
    }
    return {"variants": {"raw_bm25": v, "raw_minilm": v, "raw_rrf": v, "winner": v}}


def test_locomo_systems_read_both_json_shapes():
    systems = plots.locomo_systems(_http(), _offline())
    assert list(systems) == [
        "service (hybrid, HTTP)",
        "service (bm25, HTTP)",
        "raw turns: BM25",
        "raw turns: MiniLM",
        "raw turns: RRF",
    ]
    assert systems["service (hybrid, HTTP)"]["temporal"]["recall@10"] == 0.5
    assert systems["service (hybrid, HTTP)"]["overall"]["recall@10"] == 0.6
    assert systems["raw turns: RRF"]["single_hop"]["recall@20"] == 0.4


def test_plot_locomo_writes_pngs(tmp_path):
    paths = plots.plot_locomo(_http(), _offline(), tmp_path)
    assert [p.name for p in paths] == [
        "locomo_recall_at_10_by_category.png",
        "locomo_recall_curves_by_category.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    # Either source alone is enough.
    assert plots.plot_locomo(None, _offline(), tmp_path)
    with pytest.raises(ValueError):
        plots.plot_locomo(None, None, tmp_path)


def _token_economy(with_llm: bool) -> dict:
    rows = []
    for i in range(3):
        scope = {"segments": 10, "flushes": 4 + i, "sensory_cuts": 5}
        if with_llm:
            scope["llm"] = {"calls": 4 + i, "prompt_tokens": 2000, "completion_tokens": 40}
        rows.append(
            {"conversation": f"conv-{i}", "tokens_in": 1000, "tokens_out": 600,
             "compression_on_stream": scope}
        )  # fmt: skip
    return {"random_model": True, "rate": 0.6, "conversations": rows}


@pytest.mark.parametrize("with_llm", [False, True])
def test_token_economy_plot_and_summary(tmp_path, with_llm):
    data = _token_economy(with_llm)
    assert plots.plot_token_economy(data, tmp_path).stat().st_size > 1000
    s = plots.token_economy_summary(data)
    assert s["raw_tokens"] == 3000 and s["compressed_tokens"] == 1800
    assert s["memory_construction_calls"] == 4 + 5 + 6
    assert ("llm_prompt_tokens" in s) == with_llm
    assert s["published"]["systems"]["LightMem"] == {"calls": 415, "tokens": 997_600}


def test_summary_markdown_has_a_table_per_benchmark():
    lat = {"n": 10, "p50": 10.0, "p95": 20.0, "p99": 30.0, "mean": 12.0, "max": 31.0}
    results = {
        "command": "python -m benchmarks.run_all",
        "machine": {"cpus": 2, "platform": "linux", "torch": "2.13.0", "loadavg_at_start": [0.1]},
        "ingestion": {
            "encode_limit": {"texts_per_s": 300.0, "batch_size": 64},
            "levels": [
                {"sessions": 4, "messages": 1024, "messages_per_s": 240.0, "ratio_to_limit": 0.8}
            ],  # fmt: skip
            "plot": "benchmarks/results/ingestion.png",
        },
        "search_latency": {
            "target": {
                "scenario": "1 user x 10000",
                "strategy": "hybrid",
                "concurrency": 8,
                "p95_ms": 80.0,
                "measured_p95_ms": 20.0,
                "met": True,
            },  # fmt: skip
            "http": [
                {
                    "scenario": "1 user x 10000",
                    "strategy": "hybrid",
                    "concurrency": 1,
                    "latency_ms": lat,
                    "throughput_rps": 50.0,
                }
            ],  # fmt: skip
            "baseline": [{"scenario": "1 user x 10000", "strategy": "hybrid", "latency_ms": lat}],
            "plots": ["benchmarks/results/search_latency.png"],
        },
        "locomo": {"systems": plots.locomo_systems(_http(), None), "plots": ["x.png"]},
        "token_economy": {**plots.token_economy_summary(_token_economy(True)), "plot": "t.png"},
    }
    md = summary_markdown(results)
    assert "| 4 | 1024 | 240 | 80% |" in md
    assert "| 1 user x 10000 | hybrid | 1 | 10.0 | 20.0 | 30.0 | 50 | 10.0 / 20.0 |" in md
    assert "measured 20.0 ms, met" in md
    assert "| service (hybrid, HTTP) | 0.500 | 0.500 | 0.500 | 0.500 | 0.600 |" in md
    assert "6000 prompt tokens" in md
    assert "![ingestion](benchmarks/results/ingestion.png)" in md
