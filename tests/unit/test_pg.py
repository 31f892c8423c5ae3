"""tests/pg.py without a PostgreSQL server: the tests fall back to the embedded one."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, asyncpg
from tests import pg

async def main():
    dsn = await pg.create_database("fallback")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE t (x int)")
    await conn.execute("INSERT INTO t VALUES (41)")
    print(await conn.fetchval("SELECT x + 1 FROM t"))
    await conn.close()
    await pg.drop_database(dsn)
    print(pg.admin_dsn())

asyncio.run(main())
"""


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_server_the_tests_use_an_embedded_postgresql():
    port = unused_port()
    env = {
        **os.environ,
        "MEMSERVE_TEST_PG_ADMIN_DSN": f"postgresql://postgres@127.0.0.1:{port}/postgres",
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    value, admin = out.stdout.split()[-2:]
    assert value == "42"
    assert f"no PostgreSQL answers at postgresql://postgres@127.0.0.1:{port}" in out.stderr
    # The embedded server listens on a unix socket in its own temporary directory ...
    socket_dir = parse_qs(urlsplit(admin).query)["host"][0]
    assert "memserve-testpg-" in socket_dir
    # ... and is stopped and removed when the test process exits.
    assert not Path(socket_dir).exists()
    cmdlines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [c for c in cmdlines if socket_dir in c]
