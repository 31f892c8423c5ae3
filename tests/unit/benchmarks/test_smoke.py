"""Every benchmark script runs end to end at tiny sizes against the real service.

`python -m benchmarks.run_all --smoke` in a subprocess: it starts its own private Ray cluster,
which a pytest process already connected to the integration tests' cluster could not. Nothing
here is timed; the checks are that each step ran, every message got processed, no request
failed, and the JSON and plots were written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench-smoke")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in [k for k in env if k.startswith("MEMSERVE_")]:
        env.pop(k)  # a fresh service of its own: no inherited data dir, port or DSN
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--smoke", "--out-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "summary.json").read_text())


def test_every_step_ran(smoke):
    _, summary = smoke
    failed = {k: v for k, v in summary["steps"].items() if not v["ok"]}
    assert not failed
    assert {"ingestion", "search", "batching", "token_economy"} <= set(summary["steps"])


def test_ingestion_processed_every_message(smoke):
    out, _ = smoke
    ing = json.loads((out / "ingestion.json").read_text())
    assert [lvl["sessions"] for lvl in ing["levels"]] == ing["config"]["levels"]
    for lvl in ing["levels"]:
        per_session = ing["config"]["messages"] // lvl["sessions"]
        assert lvl["messages"] == per_session * lvl["sessions"]
        assert lvl["messages_per_s"] > 0
    assert ing["encode_limit"]["texts_per_s"] > 0
    assert (out / "ingestion.png").stat().st_size > 0


def test_search_answered_every_request(smoke):
    out, _ = smoke
    se = json.loads((out / "search_latency.json").read_text())
    cfg = se["config"]
    cells = len(cfg["concurrency"]) * 3 * (len(cfg["sizes"]) + (1 if cfg["users"][0] else 0))
    assert len(se["http"]) == cells
    for row in se["http"]:
        assert row["errors"] == 0
        assert row["requests"] == cfg["requests"]
        assert row["server_took_ms"]["n"] == cfg["requests"]
    assert len(se["baseline"]) == 3 * (len(cfg["sizes"]) + 1)
    for name in ("search_latency.png", "search_throughput.png"):
        assert (out / name).stat().st_size > 0


def test_batching_reconfigured_the_embedder_live(smoke):
    out, _ = smoke
    ba = json.loads((out / "batching.json").read_text())
    serve = ba["serve"]["Embedder"]
    timeouts = {r["batch_wait_timeout_s"] for r in serve["by_timeout"]}
    assert timeouts == set(ba["config"]["timeouts"])
    assert {r["max_batch_size"] for r in serve["by_batch_size"]} == set(
        ba["config"]["serve_batch_sizes"]
    )
    assert all(r["texts_per_s"] > 0 for r in serve["by_timeout"] + serve["by_batch_size"])
    assert (out / "batching_serve_embedder.png").stat().st_size > 0


def test_summary_markdown_written(smoke):
    out, _ = smoke
    md = (out / "summary.md").read_text()
    assert "**Ingestion**" in md and "**Search**" in md and "**Batching**" in md
