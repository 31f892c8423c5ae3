"""Embedded PostgreSQL from the `pgserver` PyPI package, kept under the data directory.

pgserver serialises init/start across processes with a file lock, so the launcher and the
Serve builder may both call `ensure_running`; the launcher stops the server at shutdown.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def ensure_running(pgdata: Path) -> str:
    """Start (or reuse) the server for `pgdata` and return its DSN. Never deletes data."""
    # XDG_RUNTIME_DIR unset makes platformdirs warn on every import; give it a private dir.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / ".runtime"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; returns whether one was stopped."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    from pgserver.postgres_server import PostgresServer, pg_ctl

    # pgserver caches one handle per directory in-process; a later start must not reuse it.
    handle = PostgresServer._instances.pop(pgdata.resolve(), None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except Exception as e:  # already stopped, or the pid file is stale
        logger.warning("embedded PostgreSQL stop: %s", e)
        return False
    return True
