"""The whole API fuzzed from its OpenAPI schema by schemathesis, as a tenant would: no server
error, every response as the schema says, no request slower than 30 s. Bounded examples per
operation so the run stays within a few minutes.

30 s, not less: erasing a user waits for the worker's batch in flight for that user (it holds
the user's lock until it commits), and under this run, after the other integration tests, one
such wait took ~10 s here (the worker awaiting its Compressor and Embedder calls)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("MEMSERVE_FUZZ_EXAMPLES", "8"))


def test_schemathesis_finds_no_server_error_nor_schema_violation(running, tmp_path):
    with running.client() as admin:
        key = admin.post(
            "/v1/keys",
            json={"tenant": "fuzz", "name": "schemathesis", "rate_limit_per_min": 100_000},
        ).json()["key"]
    cli = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(cli), "run", f"{running.url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", str(MAX_EXAMPLES),
        "--request-timeout", "30",
        "--max-response-time", "30",
        "--workers", "1",
        "--seed", "1",
        "--generation-database", "none",
        "--max-time", "170",
        "--no-color",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    report = out.stdout[-6000:] + out.stderr[-2000:]
    print(report)  # the summary (cases, checks) shows with pytest -rP
    assert out.returncode == 0, report
