"""cluster/placement.py agrees with Ray's own scheduler.

Each profile's nodes are started as a private multi-node Ray cluster on this machine with
the same logical resources (GPUs are logical: Ray schedules them without hardware), and
`python -m cluster.reserve_check` reserves every replica's bundles there, in both start
orders of the placement check: where the check says everything fits, Ray places
everything; where it says a replica cannot be placed, Ray leaves that replica pending.
The driver runs in a subprocess so that this test process never joins a Ray cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster import placement
from serve_app.profiles import PROFILES, T4, GiB, HardwareProfile, NodeSpec

pytestmark = pytest.mark.integration

PORTS_PER_NODE = 120  # 10 service ports + 100 worker ports, spaced


def _free_base(n_nodes: int) -> int:
    """A port range >= 20000 where nothing listens (other clusters share this machine)."""
    for base in range(31000, 60000, 1000):
        ports = [base + i * PORTS_PER_NODE + k for i in range(n_nodes) for k in range(10)]
        if all(_bindable(p) for p in ports):
            return base
    raise RuntimeError("no free port range")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class FakeCluster:
    """The profile's nodes as raylets on this machine, each in its own process group."""

    def __init__(self, nodes: list[NodeSpec]):
        self.nodes = nodes
        self.procs: list[subprocess.Popen] = []
        self.temp = Path(tempfile.mkdtemp(prefix="msplc-", dir="/tmp"))
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.base = _free_base(len(nodes))

    def _start(self, i: int, node: NodeSpec) -> None:
        b = self.base + i * PORTS_PER_NODE
        head = i == 0
        resources = {f"accelerator_type:{node.gpu_type}": 1} if node.gpus else {}
        cmd = [
            str(Path(sys.executable).with_name("ray")), "start", "--block",
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={b + 1}", f"--object-manager-port={b + 2}",
            f"--dashboard-agent-listen-port={b + 5}", f"--dashboard-agent-grpc-port={b + 6}",
            f"--runtime-env-agent-port={b + 7}", f"--metrics-export-port={b + 8}",
            f"--min-worker-port={b + 10}", f"--max-worker-port={b + 109}",
            f"--num-cpus={int(node.cpus)}", f"--num-gpus={node.gpus}",
            f"--memory={node.ray_memory_bytes()}", "--object-store-memory=80000000",
            f"--resources={json.dumps(resources)}",
            "--disable-usage-stats",
        ]  # fmt: skip
        if head:
            cmd += [
                "--head", f"--port={b}", f"--ray-client-server-port={b + 3}",
                "--include-dashboard=false", f"--temp-dir={self.temp}",
            ]  # fmt: skip
        else:
            cmd += [f"--address=127.0.0.1:{self.base}"]
        log = open(self.temp / f"node{i}.log", "w")  # noqa: SIM115 - lives with the process
        self.procs.append(
            subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def __enter__(self) -> FakeCluster:
        try:
            self._start(0, self.nodes[0])
            self._wait_port(self.base)
            # One at a time: raylets starting together race for socket names in the session.
            for i, node in enumerate(self.nodes[1:], start=1):
                self._start(i, node)
                self._wait_joined(i)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.base}"

    def _wait_joined(self, i: int, timeout_s: float = 120) -> None:
        # A non-head `ray start` logs this once its raylet has registered with the head.
        log = self.temp / f"node{i}.log"
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if self.procs[i].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {i} did not join: {log.read_text()[-2000:]}")
            time.sleep(0.3)

    def reserve(self, profile: HardwareProfile, wait_s: float = 5) -> dict[str, list[str]]:
        """Run the reservation check as its own driver; order -> pending replicas."""
        spec = self.temp / "profile.json"
        spec.write_text(profile.model_dump_json())
        out = subprocess.run(
            [sys.executable, "-m", "cluster.reserve_check", "--address", self.address,
             "--profile-json", str(spec), "--wait-s", str(wait_s)],
            env=self.env, capture_output=True, text=True, timeout=600,
            cwd=Path(placement.__file__).resolve().parent.parent,
        )  # fmt: skip
        assert out.returncode in (0, 1), out.stderr[-3000:]
        return {r["order"]: r["pending"] for r in json.loads(out.stdout.splitlines()[-1])}

    def _wait_port(self, port: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                raise RuntimeError((self.temp / "node0.log").read_text()[-3000:])
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.3)
        raise TimeoutError("head did not start")

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            # Nothing here holds state worth a graceful drain.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


def _expanded(profile: HardwareProfile) -> list[NodeSpec]:
    # Head first: it is the one `ray start --head` runs on.
    ordered = sorted(profile.nodes, key=lambda n: not n.head)
    return [n.model_copy(update={"count": 1}) for n in ordered for _ in range(n.count)]


@pytest.mark.parametrize("name", list(PROFILES))
def test_ray_places_every_profile_like_the_check(name):
    profile = PROFILES[name]
    assert all(p.ok for p in placement.check(profile))
    with FakeCluster(_expanded(profile)) as cluster:
        assert cluster.reserve(profile) == {order: [] for order in placement.ORDERS}


def test_ray_leaves_the_oversubscribed_replicas_pending_like_the_check():
    # One T4 asked for 0.9 + 0.1 + 0.1: the check and Ray both leave one replica out.
    over = HardwareProfile.model_validate(
        {
            **T4.model_dump(),
            "llm": {**T4.llm.model_dump(), "num_gpus": 0.9, "gpu_memory_utilization": 0.7},
        }
    )
    # A fractional replica never straddles GPUs: three 0.6 shares on two GPUs.
    frag_node = NodeSpec(
        name="gpu",
        cpus=16,
        memory_bytes=64 * GiB,
        gpus=2,
        gpu_type="L4",
        gpu_memory_bytes=22 * GiB,
        head=True,
    )
    frag = T4.model_copy(
        update={
            "nodes": (frag_node,),
            "compressor": None,
            "llm": T4.llm.model_copy(update={"backend": "none"}),
            "embedder": T4.embedder.model_copy(update={"num_replicas": 3, "num_gpus": 0.6}),
        }
    )
    for profile in (over, frag):
        with FakeCluster(_expanded(profile)) as cluster:
            pending = cluster.reserve(profile, wait_s=3)
        for order in placement.ORDERS:
            expected = placement.place(profile, order).errors
            assert expected, (profile.name, order)
            assert len(pending[order]) == len(expected), (order, pending, expected)
