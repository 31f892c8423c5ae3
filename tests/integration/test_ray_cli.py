"""Ray's own CLIs against the cluster that `make serve` starts, as the README has them:
`eval "$(memserve env)"`, then `serve status`, `serve deploy`, `ray job submit`, `ray job list`,
with none of the test process's Ray settings (token, address) in the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments.launch import load_config

pytestmark = pytest.mark.integration


def shell(running, script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["MEMSERVE_DATA_DIR"] = str(running.service.settings.data_dir)
    # A shell that has never seen this cluster: only `memserve env` tells it where and how.
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    memserve_env = f"{sys.executable} -m memserve.cli env"
    return subprocess.run(
        ["bash", "-c", f'set -e\neval "$({memserve_env})"\n{script}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_token_file_is_private(running):
    token = running.service.settings.data_dir / "ray" / "auth_token"
    assert token.stat().st_mode & 0o077 == 0
    assert token.read_text() == running.service.cluster.token


def test_serve_status_and_deploy(running, tmp_path):
    # The config as `make serve` applied it (the test service's port instead of 8000).
    config = load_config(running.service.config_path, running.service.settings)
    path = Path(tmp_path) / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    r = shell(running, f"serve deploy {path}\nserve status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Sent deploy request successfully" in r.stdout + r.stderr
    status = yaml.safe_load(r.stdout[r.stdout.index("proxies:") :])
    for app in ("memserve-index", "memserve"):
        assert status["applications"][app]["status"] in ("RUNNING", "DEPLOYING")
    running.service._wait_running(["memserve-index", "memserve"], 300)


def test_ray_job_submit_and_list(running):
    r = shell(
        running,
        "ray job submit --submission-id memserve-cli-test -- python -m jobs.generations status\n"
        "ray job list",
        timeout=400,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"generations"' in r.stdout or '"active"' in r.stdout
    assert "memserve-cli-test" in r.stdout and "SUCCEEDED" in r.stdout
