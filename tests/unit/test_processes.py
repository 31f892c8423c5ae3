"""Stopping a private cluster's processes: the group, stragglers that ignore SIGTERM, and
descendants that left the group."""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from serve_app.processes import CLUSTER_MARK, alive, reap_orphan, record_owner, stop_process_tree


def test_stop_takes_the_group_and_every_descendant_within_the_timeout():
    # A leader that ignores SIGTERM, a child in its group, and one in a session of its own.
    proc = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 60 & setsid sleep 60 & wait"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while len(psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) == 3
    assert len({os.getsid(p.pid) for p in tree}) == 2  # one left the group's session
    started = time.monotonic()
    stop_process_tree(proc, timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert [p.pid for p in tree if alive(p)] == []
    assert proc.returncode is not None


def test_reap_orphan_kills_what_names_the_dead_owners_temp_dir(tmp_path):
    temp_dir = tmp_path / "msray-x"
    temp_dir.mkdir()
    state = tmp_path / "ray-cluster.json"
    record_owner(state, temp_dir, None)
    # The owner still runs (this process): no second one.
    with pytest.raises(RuntimeError, match="already runs on this data directory"):
        reap_orphan(state)

    leftover = subprocess.Popen(
        ["bash", "-c", f"exec -a 'raylet --log_dir={temp_dir}/logs' sleep 60"],
        start_new_session=True,
    )
    # Renamed, as Ray renames its workers and agents: found by the mark it inherited.
    renamed = subprocess.Popen(
        ["bash", "-c", "exec -a ray::DashboardAgent sleep 60"],
        env={**os.environ, CLUSTER_MARK: str(temp_dir)},
        start_new_session=True,
    )
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        owner = json.loads(state.read_text())
        state.write_text(json.dumps({**owner, "created": owner["created"] - 1}))  # owner dead
        time.sleep(0.2)
        reap_orphan(state)
        assert leftover.wait(5) == -signal.SIGKILL
        assert renamed.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
        assert not state.exists() and not temp_dir.exists()
        reap_orphan(state)  # nothing recorded: nothing to do
    finally:
        bystander.kill()
        bystander.wait()
