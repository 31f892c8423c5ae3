"""A private local Ray cluster on ports >= 20000, started and stopped by whoever owns it.

`ray stop` would stop every cluster on the machine; this keeps to the one it started.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_app.processes import CLUSTER_MARK, die_with_parent, stop_process_tree
from serve_app.serving_env import cluster_env, colocated_env, serving_keys


class LocalRayCluster:
    def __init__(
        self,
        port_base: int,
        num_cpus: int | None = None,
        env: dict | None = None,
        fast_path: bool = True,
    ):
        if port_base < 20000:
            raise ValueError("Ray ports must be >= 20000 on shared machines")
        self.port_base = port_base
        # Logical CPUs, not cores: the Serve groups of the local profile reserve ~2, and the
        # offline jobs' Ray Data actor pools need room beside them or they never schedule.
        self.num_cpus = num_cpus or max(4, (os.cpu_count() or 2) * 2)
        self.proc: subprocess.Popen | None = None
        # Short path: Ray puts unix sockets under it (108-byte limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="msray-", dir="/tmp"))
        serving = (
            {**cluster_env(os.cpu_count() or 1), **colocated_env(port_base, self.temp_dir)}
            if fast_path
            else {}
        )
        # A token of our own: ~/.ray/auth_token is shared by every cluster on the machine.
        # This interpreter's scripts first on PATH: `ray job submit -- python -m jobs.x` then
        # runs the driver with the Python that has memserve installed.
        self.env = {
            # Every process of the cluster inherits it: `reap_orphan` finds them by it.
            CLUSTER_MARK: str(self.temp_dir),
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            **serving,
            **(env or {}),
        }

    @property
    def token(self) -> str:
        return self.env["RAY_AUTH_TOKEN"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port_base}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 4}"

    def export_env(self) -> dict[str, str]:
        """The environment of `ray start`, after exporting the cluster's Ray settings here.

        The driver joins with the cluster's token and sees the Serve switches its processes
        use; switches an earlier cluster of this process exported do not leak into this one.
        """
        for key in serving_keys(self.port_base, self.temp_dir):
            if key not in self.env:
                os.environ.pop(key, None)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("RAY_")})
        return {**os.environ, **self.env, "RAY_USAGE_STATS_ENABLED": "0"}

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
        env = self.export_env()
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        # Ray reads the auth settings once, at import; make an imported Ray read them again.
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        wait_ports_free(b, timeout_s=20)
        log = open(self.temp_dir / "ray-start.log", "w")  # noqa: SIM115 - lives with the process
        # Own process group: stopping it stops exactly this cluster. A hard-killed owner takes
        # the cluster with it (`die_with_parent`), so a restart finds its ports free.
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
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

    def stop(self, timeout_s: float = 2) -> None:
        """SIGTERM to the cluster's process group, SIGKILL to whatever of it is left after
        `timeout_s`: Ray's state worth keeping lives in PostgreSQL and the vector store, so a
        cluster that does not stop at once is not waited for."""
        if self.proc is None:
            return
        stop_process_tree(self.proc, timeout_s)
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def free_port_base() -> int:
    """A port base for a private cluster (tests, benchmarks) whose fixed ports nothing holds.

    Blocks of 1000 from 20000 up to the kernel's ephemeral range (32768 by default), where the
    local end of any client connection can take a port by chance (a test cluster's dashboard
    once found its port taken that way); never the block `make serve` uses by default."""
    from serve_app.settings import Settings

    default = Settings.model_fields["ray_port_base"].default
    blocks = [b for b in range(20000, _ephemeral_low() - 999, 1000) if b != default]
    random.shuffle(blocks)
    for base in blocks:
        if not held_ports(base):
            return base
    raise RuntimeError("no free block of Ray ports between 20000 and the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def wait_ports_free(port_base: int, timeout_s: float) -> None:
    """Wait for the cluster's fixed ports to be free (a cluster stopped a moment ago lets go
    of them within seconds); raise if another process keeps them."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = held_ports(port_base)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray ports {busy} are in use: another cluster runs on port base {port_base}"
                " (MEMSERVE_RAY_PORT_BASE)"
            )
        time.sleep(0.5)


def held_ports(port_base: int) -> list[int]:
    """The fixed ports of a cluster on `port_base` (GCS, node manager, ..., the runtime-env
    agent: base .. base + 8) that something listens on."""
    return [p for p in range(port_base, port_base + 9) if _port_open(p)]


def free_port() -> int:
    """A TCP port nothing listens on now, for a service's HTTP port or a test's server."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
