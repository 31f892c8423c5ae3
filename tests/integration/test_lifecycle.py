"""The service as `make serve` runs it: `python -m deployments.launch` in its own process group
on a fresh data directory with the embedded PostgreSQL. A killed PostgreSQL is restarted and
the service recovers; idle sessions and the flush route make buffered messages searchable;
Ctrl-C stops everything within 10 s; a start after a hard kill adopts the orphaned PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fasteners
import httpx
import psutil
import pytest

from deployments.local_cluster import free_port, free_port_base
from serve_app.storage import embedded_pg
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

IDLE_FLUSH_S = 10
STOP_WITHIN_S = 10


class Launched:
    """One `python -m deployments.launch configs/local.yaml` in its own process group."""

    def __init__(self, data_dir: Path, http_port: int, ray_port_base: int) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pg"
        self.url = f"http://127.0.0.1:{http_port}"
        # Nothing of this test process's own service or cluster leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSERVE_", "RAY_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            HF_HUB_OFFLINE="1",
            MEMSERVE_DATA_DIR=str(data_dir),
            MEMSERVE_HTTP_PORT=str(http_port),
            MEMSERVE_RAY_PORT_BASE=str(ray_port_base),
            MEMSERVE_WORKER_IDLE_POLL_S="0.2",
            MEMSERVE_IDLE_FLUSH_S=str(IDLE_FLUSH_S),
            # Known here, so a test can hold pgserver's start lock (see `pg_start_lock`).
            XDG_RUNTIME_DIR=str(data_dir / ".runtime"),
        )
        self.log = data_dir.parent / f"launch-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deployments.launch", "configs/local.yaml"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_up(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "memserve is up" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"launcher not up (rc {self.proc.poll()}):\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def client(self) -> httpx.Client:
        key = (self.data_dir / "admin.key").read_text().strip()
        return httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )

    def pg_start_lock(self) -> fasteners.InterProcessLock:
        """The lock pgserver takes around every start of a server (under the launcher's
        XDG_RUNTIME_DIR): held here, the supervisor cannot bring PostgreSQL back."""
        return fasteners.InterProcessLock(
            self.data_dir / ".runtime" / "python_PostgresServer" / ".lockfile"
        )

    def processes(self) -> list[psutil.Process]:
        """The launcher, everything it started (the Ray cluster's processes) and PostgreSQL."""
        launcher = psutil.Process(self.proc.pid)
        procs = [launcher, *launcher.children(recursive=True)]
        pid = embedded_pg.postmaster_pid(self.pgdata)
        if pid is not None:
            procs.append(psutil.Process(pid))
        return procs

    def interrupt(self) -> float:
        """Ctrl-C as a terminal sends it (SIGINT to the process group); seconds to exit."""
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
        return time.monotonic() - started

    def kill(self) -> None:
        """Whatever is left, for the fixtures' teardown."""
        for p in self.processes() if self.proc.poll() is None else []:
            p.kill()
        self.proc.wait()
        embedded_pg.stop(self.pgdata)


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def add(c: httpx.Client, session: str, texts: list[str], **kw) -> httpx.Response:
    messages = [
        {"role": "user", "name": "Alice", "message_id": f"{session}-{i}", "content": t}
        for i, t in enumerate(texts)
    ]
    return c.post(
        "/v1/memories", json={"user_id": "u", "session_id": session, "messages": messages, **kw}
    )


def found(c: httpx.Client, text: str, session: str) -> bool:
    r = c.post(
        "/v1/search", json={"user_id": "u", "query": text, "filters": {"session_id": session}}
    )
    return r.status_code == 200 and any(text in m["memory"] for m in r.json()["results"])


def wait_found(c: httpx.Client, text: str, session: str, timeout_s: float) -> float:
    """Seconds until a search finds `text`; fails after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if found(c, text, session):
            return time.monotonic() - started
        time.sleep(0.3)
    pytest.fail(f"{text!r} not searchable after {timeout_s} s")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    service = Launched(tmp_path_factory.mktemp("data"), free_port(), free_port_base())
    try:
        service.wait_up()
        yield service
    finally:
        if service.proc.poll() is None:
            service.kill()


def test_idle_session_becomes_searchable_with_no_client_action(launched):
    with launched.client() as c:
        # A first write creates the user; its own flush is not what is tested here.
        assert add(c, "warmup", ["Warm-up message."], wait=True).status_code == 200
        text = "My sister Jolene keeps bees on her roof in Lisbon."
        started = time.monotonic()
        assert add(c, "idle", [text, "Honey every August."]).status_code == 202
        took = wait_found(c, text, "idle", IDLE_FLUSH_S + 60)
        # Not before the session went quiet: the buffers held it until the idle flush.
        assert time.monotonic() - started >= IDLE_FLUSH_S - 0.5
        assert took >= IDLE_FLUSH_S - 1.5


def test_flush_route_makes_one_session_searchable_now(launched):
    with launched.client() as c:
        text = "The new bicycle is a green Brompton with six gears."
        started = time.monotonic()
        assert add(c, "flushme", [text, "It folds small."]).status_code == 202
        r = c.post("/v1/sessions/flushme/flush", params={"user_id": "u"})
        assert (r.status_code, r.json()) == (202, {"flush_upto_seq": 1}), r.text
        wait_found(c, text, "flushme", IDLE_FLUSH_S)
        assert time.monotonic() - started < IDLE_FLUSH_S
        r = c.post("/v1/sessions/nope/flush", params={"user_id": "u"})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_session")


def test_killed_postgresql_is_restarted_and_the_service_recovers(launched):
    with launched.client() as c:
        # Its own user data, searched during the outage: the test does not lean on another's.
        r = add(c, "before", ["Before the outage Alice planted tulips."], wait=True)
        assert r.status_code == 200, r.text
        assert c.get("/readyz").status_code == 200
        old_pid = embedded_pg.postmaster_pid(launched.pgdata)
        seen: list[tuple[str, int]] = []

        def probe() -> tuple[httpx.Response, httpx.Response]:
            ready = c.get("/readyz")
            search = c.post("/v1/search", json={"user_id": "u", "query": "tulips"})
            for name, r in (("readyz", ready), ("search", search)):
                seen.append((name, r.status_code))
                assert r.status_code in (200, 503), seen
                if r.status_code == 503:
                    assert r.headers.get("retry-after"), (name, r.headers)
            return ready, search

        # The supervisor restarts a dead server within a second or so, sooner than a loaded
        # machine answers a probe; holding pgserver's start lock keeps the outage open until
        # /readyz has been seen to tell it.
        lock = launched.pg_start_lock()
        assert lock.acquire(timeout=30)
        try:
            # The whole server dies at once, as when its machine or container goes: a
            # postmaster killed alone leaves its backends serving pooled connections a moment.
            server = psutil.Process(old_pid)
            for proc in [*server.children(recursive=True), server]:
                with contextlib.suppress(psutil.NoSuchProcess):  # a backend that just ended
                    proc.kill()
            psutil.wait_procs([server], timeout=10)
            deadline = time.monotonic() + 30
            while True:
                ready, search = probe()
                if ready.status_code == 503:
                    break
                assert time.monotonic() < deadline, seen
                time.sleep(0.2)
            # /readyz tells the story meanwhile.
            assert not ready.json()["checks"]["postgresql"]["ok"], ready.json()
            assert embedded_pg.postmaster_pid(launched.pgdata) is None  # the lock held it down
        finally:
            lock.release()
        deadline = time.monotonic() + 90
        while True:
            ready, search = probe()
            if ready.status_code == 200 and search.status_code == 200:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        assert any("planted tulips" in m["memory"] for m in search.json()["results"]), search.text
        new_pid = embedded_pg.postmaster_pid(launched.pgdata)
        assert new_pid not in (None, old_pid)
        assert launched.proc.poll() is None  # the service itself was never restarted

        text = "After the outage Alice bought a red kayak."
        r = add(c, "after", [text], wait=True)
        assert r.status_code == 200 and r.json()["pending"] == 0, r.text
        assert found(c, text, "after")


def test_ctrl_c_stops_everything_within_10_s(launched):
    procs = launched.processes()
    assert len(procs) > 3 and embedded_pg.postmaster_pid(launched.pgdata) is not None
    took = launched.interrupt()
    assert launched.proc.returncode == 0, launched.tail()
    assert took <= STOP_WITHIN_S, (took, launched.tail())
    assert alive(procs) == []
    assert embedded_pg.postmaster_pid(launched.pgdata) is None


def test_a_start_after_a_hard_kill_adopts_the_orphaned_postgresql(tmp_path):
    data_dir, port, base = tmp_path / "data", free_port(), free_port_base()
    data_dir.mkdir()
    first = Launched(data_dir, port, base)
    second = None
    try:
        first.wait_up()
        with first.client() as c:
            text = "Alice's locker code is 4471."
            assert add(c, "kept", [text], wait=True).status_code == 200
        first_procs = first.processes()
        orphan = embedded_pg.postmaster_pid(first.pgdata)
        first.proc.send_signal(signal.SIGKILL)  # the launcher alone, as `kill -9` would
        first.proc.wait()
        assert embedded_pg.postmaster_pid(first.pgdata) == orphan  # left running

        second = Launched(data_dir, port, base)
        second.wait_up()
        # Adopted, not a second server: the same postmaster serves the same data.
        assert embedded_pg.postmaster_pid(second.pgdata) == orphan
        servers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(first.pgdata.resolve()) in (p.info["cmdline"] or [])
        ]
        assert [p.pid for p in servers] == [orphan]
        with second.client() as c:
            assert found(c, text, "kept")
        procs = second.processes()
        took = second.interrupt()
        assert took <= STOP_WITHIN_S, (took, second.tail())
        # Nothing of either run is left: the first run's cluster went down with its launcher.
        assert alive(first_procs + procs) == []
    finally:
        for service in (first, second):
            if service is not None and service.proc.poll() is None:
                service.kill()
        embedded_pg.stop(data_dir / "pg")
