"""Processes a launcher owns: stopping a process tree, dying with the owner, and finding what a
hard-killed owner left behind (its Ray cluster's processes) on the next start."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Set in the environment of every process of a private cluster (its temporary directory).
CLUSTER_MARK = "MEMSERVE_CLUSTER_TEMP_DIR"


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child get SIGKILL when the process that started it dies
    (Linux). prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    # SIGKILL: `ray start --block` handles SIGTERM with a slow graceful teardown; killed, it
    # takes its processes with it (Ray's own fate sharing), and `reap_orphan` the rest.
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def stop_process_tree(proc: subprocess.Popen, timeout_s: float) -> None:
    """Stop `proc` (a process group leader) with its group and every descendant."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    # Descendants that left the group (a process may start its own session) go too.
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.05)


def alive(p) -> bool:
    """Running and not a zombie (a killed orphan waits for init to reap it)."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def record_owner(state_file: Path, temp_dir: Path, pgid: int | None) -> None:
    """Note which process owns the cluster of this data directory, for `reap_orphan`."""
    import psutil

    me = psutil.Process()
    state = {
        "pid": me.pid,
        "created": me.create_time(),
        "temp_dir": str(temp_dir),
        "pgid": pgid,
    }
    state_file.write_text(json.dumps(state))


def _of_cluster(p, state: dict) -> bool:
    """Whether `p` belongs to the recorded cluster: its process group, its temporary directory
    on the command line, or the mark in its environment (Ray renames some processes, which can
    blank both of the latter)."""
    import psutil

    temp_dir = state["temp_dir"]
    try:
        if state.get("pgid") and os.getpgid(p.pid) == state["pgid"]:
            return True
        if temp_dir in " ".join(p.cmdline()):
            return True
        return p.environ().get(CLUSTER_MARK) == temp_dir
    except (psutil.Error, OSError):
        return False


def reap_orphan(state_file: Path) -> None:
    """Kill what remains of a cluster whose owner was killed hard (`_of_cluster`). Refuses to
    start a second owner while the first still runs."""
    import psutil

    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        if psutil.Process(state["pid"]).create_time() == state["created"]:
            raise RuntimeError(f"memserve already runs on this data directory (pid {state['pid']})")
    temp_dir = state["temp_dir"]
    left = [p for p in psutil.process_iter() if p.pid != os.getpid() and _of_cluster(p, state)]
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in left):
        time.sleep(0.05)
    shutil.rmtree(temp_dir, ignore_errors=True)
    state_file.unlink(missing_ok=True)
