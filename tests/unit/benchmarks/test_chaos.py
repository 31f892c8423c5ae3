"""The chaos trials: the checks over an export (pure), and a short run against the real
service in a subprocess (its own private cluster), one trial per fault kind, that must find
nothing lost, duplicated or answered with a 5xx other than 503."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import chaos

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("MEMSERVE_LOCOMO_DIR") or ROOT.parent / "shared" / "data" / "locomo-dev")


def _export(messages, memories, version=1) -> list[dict]:
    lines = [{"type": "header", "memory_version": version}]
    lines += [{"type": "message", "data": {"session_id": s, "message_id": i, "status": st}}
              for s, i, st in messages]  # fmt: skip
    lines += [{"type": "memory", "data": {"session_id": s, "kind": "message", "version": v,
               "source_message_ids": ids, "text": t}} for s, ids, t, v in memories]  # fmt: skip
    return lines


def test_check_export_counts_every_broken_promise():
    accepted = {"s": {"a", "b", "c", "d"}}
    lines = _export(
        [("s", "a", "done"), ("s", "b", "done"), ("s", "c", "pending"), ("s", "x", "done")],
        [
            ("s", ["a"], "A", 1),
            ("s", ["a"], "A", 1),  # the same memory twice
            ("s", ["b"], "B", 2),  # another memory version: not served
        ],
    )
    assert chaos.check_export(lines, accepted) == {
        "accepted": 4,
        "stored": 4,
        "lost": 1,  # d
        "stored_twice": 0,
        "unexpected": 1,  # x
        "unprocessed": 2,  # c pending, d lost
        "uncited": 1,  # b is done but only version 2 cites it
        "memories": 2,
        "duplicated": 1,
    }


def test_schedule_covers_every_kind_and_kills_postgres_last():
    kinds = ["Ingress", "postgres", "Embedder"]
    order = chaos.schedule(kinds, 7, random.Random(1))
    assert len(order) == 7 and set(order) == set(kinds)
    pg = order.count("postgres")
    assert pg >= 2 and order[-pg:] == ["postgres"] * pg


@pytest.mark.integration
def test_short_chaos_run_loses_nothing(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"LoCoMo dev set not found at {DATA} (MEMSERVE_LOCOMO_DIR)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in [k for k in env if k.startswith("MEMSERVE_")]:
        env.pop(k)  # a fresh service of its own
    kinds = "Ingress,Embedder,MemoryIndex,IngestWorker,controller"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--trials", "5", "--turns", "6",
         "--kinds", kinds, "--data", str(DATA),
         "--out-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "chaos.json").read_text())
    assert set(result["by_kind"]) == set(kinds.split(","))
    for kind, row in result["by_kind"].items():
        bad = {
            k: row[k]
            for k in (
                "not_recovered",
                "lost",
                "duplicated",
                "stored_twice",
                "unprocessed",
                "uncited",
                "unfound",
                "non_503_5xx",
                "503_without_retry_after",
                "hangs",
            )  # fmt: skip
            if row[k]
        }
        assert not bad, (kind, bad, result["trials"])
