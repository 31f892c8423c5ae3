"""Throwaway databases for the tests.

On the PostgreSQL server at MEMSERVE_TEST_PG_ADMIN_DSN (default: 127.0.0.1:5432, trust auth);
where none answers there, on the embedded PostgreSQL the service itself ships (pgserver),
started once per test process under a temporary directory and stopped when it exits, so
`make test` needs no server of its own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

_admin_dsn: str | None = None


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _db_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def _answers(dsn: str) -> bool:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def _start_embedded() -> str:
    from serve_app.storage import embedded_pg

    root = Path(tempfile.mkdtemp(prefix="memserve-testpg-"))
    pgdata = root / "pg"

    def cleanup() -> None:
        embedded_pg.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)
    return embedded_pg.ensure_running(pgdata)


def admin_dsn() -> str:
    """The server's admin DSN, settled once per process."""
    global _admin_dsn
    if _admin_dsn is None:
        configured = os.environ.get("MEMSERVE_TEST_PG_ADMIN_DSN", DEFAULT_ADMIN_DSN)
        if _answers(configured):
            _admin_dsn = configured
        else:
            print(
                f"tests: no PostgreSQL answers at {configured}; using an embedded one",
                file=sys.stderr,
            )
            _admin_dsn = _start_embedded()
    return _admin_dsn


async def create_database(prefix: str = "memserve_t") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = admin_dsn()
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_db(admin, name)


async def drop_database(dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_db_name(dsn)}" WITH (FORCE)')
    finally:
        await conn.close()


def __getattr__(name: str) -> str:
    # `from tests.pg import ADMIN_DSN`: the DSN settled as above.
    if name == "ADMIN_DSN":
        return admin_dsn()
    raise AttributeError(name)
