"""A private local Ray cluster on ports >= 20000, started and stopped by whoever owns it.

`ray stop` would stop every cluster on the machine; this keeps to the one it started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class LocalRayCluster:
    def __init__(self, port_base: int, num_cpus: int | None = None, env: dict | None = None):
        if port_base < 20000:
            raise ValueError("Ray ports must be >= 20000 on shared machines")
        self.port_base = port_base
        # Logical CPUs, not cores: the Serve groups of the local profile reserve ~2, and the
        # offline jobs' Ray Data actor pools need room beside them or they never schedule.
        self.num_cpus = num_cpus or max(4, (os.cpu_count() or 2) * 2)
        # A token of our own: ~/.ray/auth_token is shared by every cluster on the machine.
        self.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        # Short path: Ray puts unix sockets under it (108-byte limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="msray-", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port_base}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 4}"

    def start(self, timeout_s: float = 90) -> str:
        """Start the cluster and export its token to this process, so `ray.init` can join."""
        b = self.port_base
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_bin, "start", "--head", "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={b}",
            f"--node-manager-port={b + 1}",
            f"--object-manager-port={b + 2}",
            f"--ray-client-server-port={b + 3}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={b + 4}",
            f"--dashboard-agent-listen-port={b + 5}",
            f"--dashboard-agent-grpc-port={b + 6}",
            f"--runtime-env-agent-port={b + 7}",
            f"--metrics-export-port={b + 8}",
            f"--min-worker-port={b + 100}",
            f"--max-worker-port={b + 999}",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]  # fmt: skip
        env = {**os.environ, **self.env, "RAY_USAGE_STATS_ENABLED": "0"}
        os.environ.update({k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        # Ray reads the auth settings once, at import; make an imported Ray read them again.
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        log = open(self.temp_dir / "ray-start.log", "w")  # noqa: SIM115 - lives with the process
        # Own process group: stopping it stops exactly this cluster.
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {self.proc.returncode}: "
                    + (self.temp_dir / "ray-start.log").read_text()[-3000:]
                )
            log_text = (self.temp_dir / "ray-start.log").read_text(errors="replace")
            if "Ray runtime started" in log_text and _port_open(b):
                return self.address
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("local Ray cluster did not start in time")

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # `ray start --block` tears its processes down on SIGTERM; reap stragglers of our group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
