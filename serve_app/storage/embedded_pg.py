"""Embedded PostgreSQL from the `pgserver` PyPI package, kept under the data directory.

pgserver serialises init/start across processes with a file lock, so the launcher and the
Serve builder may both call `ensure_running`; the launcher stops the server at shutdown and,
while it runs, `Supervisor` starts it again whenever it dies.

A server left running by a launcher that was killed (SIGKILL) is adopted through its
`postmaster.pid`: it is the only server of that directory, and PostgreSQL itself refuses to
start a second one there. A `postmaster.pid` whose process is not that server (a stale file
after a crash, the pid since reused) is removed so the server can start.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# A restart after SIGKILL can find the dead server's backends still attached to its shared
# memory for a moment; PostgreSQL refuses to start until they are gone.
START_ATTEMPTS = 10


def _runtime_dir(pgdata: Path) -> None:
    # XDG_RUNTIME_DIR unset makes platformdirs warn on every import; give it a private dir.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / ".runtime"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the server running on `pgdata`, from its postmaster.pid; None when none runs
    (no file, or its pid is dead or another program's)."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if _is_postmaster_of(pid, pgdata) else None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if not cmdline or not Path(cmdline[0]).name.startswith("postgres"):
        return False
    resolved = str(pgdata.resolve())
    return any(arg == resolved or arg == str(pgdata) for arg in cmdline)


def _forget_handle(pgdata: Path) -> None:
    """Drop pgserver's in-process handle of `pgdata`, so the next start looks at the disk."""
    from pgserver.postgres_server import PostgresServer

    handle = PostgresServer._instances.pop(pgdata.resolve(), None)
    if handle is not None:
        atexit.unregister(handle._cleanup)


def ensure_running(pgdata: Path) -> str:
    """Start (or adopt) the server for `pgdata` and return its DSN. Never deletes data."""
    _runtime_dir(pgdata)
    import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pid_file = pgdata / "postmaster.pid"
    last: Exception | None = None
    for attempt in range(START_ATTEMPTS):
        running = postmaster_pid(pgdata)
        if running is None:
            _forget_handle(pgdata)
            if pid_file.exists():
                logger.warning("removing stale %s (no server of this directory runs)", pid_file)
                with contextlib.suppress(FileNotFoundError):
                    pid_file.unlink()
        else:
            logger.info("embedded PostgreSQL already running (pid %s): adopting it", running)
        try:
            return pgserver.get_server(pgdata, cleanup_mode=None).get_uri()
        except Exception as e:  # the dead server's backends still hold its shared memory
            last = e
            _forget_handle(pgdata)
            logger.warning("embedded PostgreSQL did not start (attempt %d): %s", attempt + 1, e)
            time.sleep(min(0.2 * 2**attempt, 2.0))
    raise RuntimeError(f"embedded PostgreSQL under {pgdata} did not start") from last


def stop(pgdata: Path, timeout_s: float = 5) -> bool:
    """Stop the embedded server if it runs; returns whether one was stopped.

    A fast shutdown (sessions disconnected, transactions rolled back) within `timeout_s`, else
    an immediate one, else SIGKILL: committed data is safe in all three (WAL replay).
    """
    pid = postmaster_pid(pgdata)
    _forget_handle(pgdata)
    if pid is None:
        return False
    from pgserver.postgres_server import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    wait = str(max(1, int(timeout_s)))
    for mode in ("fast", "immediate"):
        try:
            pg_ctl(["-w", "-t", wait, "-m", mode, "stop"], pgdata=pgdata, user=user)
            return True
        except Exception as e:  # timed out, or it died meanwhile
            if postmaster_pid(pgdata) is None:
                return True
            logger.warning("embedded PostgreSQL %s stop: %s", mode, e)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


class Supervisor:
    """Starts the embedded server again whenever it dies, until `stop()`.

    Every pool of the service reconnects by itself (asyncpg replaces a closed connection on
    the next acquire), and the DSN stays the same: the same directory gets the same socket.
    """

    def __init__(self, pgdata: Path, dsn: str, interval_s: float = 0.5) -> None:
        self.pgdata = pgdata
        self.dsn = dsn
        self.interval_s = interval_s
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def check_once(self) -> bool:
        """Start the server if it is down; returns whether it had to."""
        if postmaster_pid(self.pgdata) is not None:
            return False
        logger.warning("embedded PostgreSQL under %s is down: starting it again", self.pgdata)
        dsn = ensure_running(self.pgdata)
        if dsn != self.dsn:
            logger.error("embedded PostgreSQL came back on %s, replicas use %s", dsn, self.dsn)
        self.restarts += 1
        logger.info("embedded PostgreSQL running again (restart %d)", self.restarts)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception:
                logger.exception("embedded PostgreSQL restart failed; trying again")
