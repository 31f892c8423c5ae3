"""The fast-path report: ratios against the default floor of the same run, and its plot."""

from benchmarks.fast_path import FLOORS, STRATEGIES, plot, ratios


def _row(key: str, value: str, clients: int, rps: float, p95: float, took: float | None = None):
    return {
        key: value,
        "concurrency": clients,
        "throughput_rps": rps,
        "latency_ms": {"p50": p95 / 2, "p95": p95},
        "server_took_ms": None if took is None else {"p50": took, "p95": took * 2},
    }


def _result() -> dict:
    clients = [1, 8]
    return {
        "fill": 100,
        "clients": clients,
        "floor": [_row("floor", k, c, 100.0 * c, 10.0 * c) for k in FLOORS for c in clients],
        "search": [
            _row("strategy", s, c, 50.0 * c, 40.0 * c, took=9.0)
            for s in STRATEGIES
            for c in clients
        ],
        "encode_batch32": {"sessions": 50.0, "fill": 40.0},
        "ingestion": [
            {"kind": "sessions_16", "messages_per_s": 35.0},
            {"kind": "fill", "messages_per_s": 34.0},
        ],
    }


def test_ratios_compare_with_the_default_floor_and_the_encode_rate():
    r = ratios(_result())
    assert r["hybrid_c8_rps_vs_default_floor"] == 0.5  # 400 / 800
    assert r["hybrid_c8_p95_vs_default_floor"] == 4.0  # 320 / 80
    assert r["bm25_c1_rps_vs_default_floor"] == 0.5
    assert r["hybrid_c1_server_took_ms_p50"] == 9.0
    assert r["ingest_sessions_16_vs_encode"] == 0.7  # against the sessions' texts
    assert r["ingest_fill_vs_encode"] == 0.85  # against the fill's texts


def test_plot_writes_a_png(tmp_path):
    out = plot(_result(), tmp_path)
    assert out.name == "fast_path.png" and out.stat().st_size > 1000
