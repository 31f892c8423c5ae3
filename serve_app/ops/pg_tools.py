"""The PostgreSQL a backup or restore works on (the external server, or the embedded one under
the data directory) and the client programs that fit its version."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serve_app.settings import Settings
from serve_app.storage import embedded_pg


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The DSN of the service's PostgreSQL. The embedded server is started for the duration
    when it is not running (and stopped after); a running one, the service's, is used as is."""
    if settings.pg_dsn is not None:
        yield settings.pg_dsn
        return
    pgdata = settings.pg_data_dir.resolve()
    was_running = (pgdata / "postmaster.pid").exists()
    dsn = embedded_pg.ensure_running(pgdata)
    try:
        yield dsn
    finally:
        if not was_running:
            embedded_pg.stop(pgdata)


def _candidates(name: str) -> list[Path]:
    out = []
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        out.append(Path(POSTGRES_BIN_PATH) / name)
    except ImportError:  # an external server only; its own tools are on PATH
        pass
    found = shutil.which(name)
    if found:
        out.append(Path(found))
    return [p for p in out if p.exists()]


def _major(program: Path) -> int:
    text = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=True)
    m = re.search(r"(\d+)(?:\.\d+)?", text.stdout)
    if m is None:
        raise RuntimeError(f"cannot read the version of {program}: {text.stdout!r}")
    return int(m.group(1))


def tool(name: str, server_major: int) -> str:
    """`pg_dump` or `pg_restore` for a server of `server_major`: one of the same major version
    (the embedded server's ships with pgserver), else the oldest newer one (they read older
    servers), never an older one."""
    versions = sorted((_major(p), str(p)) for p in _candidates(name))
    same = [p for v, p in versions if v == server_major]
    newer = [p for v, p in versions if v > server_major]
    if same or newer:
        return (same or newer)[0]
    raise RuntimeError(
        f"no {name} of PostgreSQL {server_major} or newer: found {versions or 'none'}"
    )


def run(argv: list[str]) -> None:
    """Run a client program; its error output becomes the exception's message."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}"
        )
