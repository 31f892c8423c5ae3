"""The embedded default: a PostgreSQL started from the pgserver package under the data dir."""

import asyncio
import os
import signal
import time

import asyncpg

from serve_app.storage import embedded_pg
from serve_app.storage.postgres import _migrations, create_pool, migrate


async def test_embedded_postgres_starts_migrates_and_keeps_data(tmp_path):
    pgdata = tmp_path / "pg"
    dsn = embedded_pg.ensure_running(pgdata)
    try:
        pool = await create_pool(dsn, 1, 2)
        assert await migrate(pool) == [name for _, name, _ in _migrations()]
        await pool.execute("INSERT INTO users (user_id) VALUES ('kept')")
        await pool.close()
    finally:
        assert embedded_pg.stop(pgdata)
    # Started again on the same directory: the data is still there, nothing re-applied.
    dsn = embedded_pg.ensure_running(pgdata)
    try:
        pool = await create_pool(dsn, 1, 2)
        assert await migrate(pool) == []
        assert await pool.fetchval("SELECT user_id FROM users") == "kept"
        await pool.close()
    finally:
        embedded_pg.stop(pgdata)


async def test_a_running_server_is_adopted_not_started_twice(tmp_path):
    pgdata = tmp_path / "pg"
    dsn = embedded_pg.ensure_running(pgdata)
    try:
        pid = embedded_pg.postmaster_pid(pgdata)
        assert pid is not None
        # As a fresh launcher after a hard kill sees it: no handle in this process.
        embedded_pg._forget_handle(pgdata)
        assert embedded_pg.ensure_running(pgdata) == dsn
        assert embedded_pg.postmaster_pid(pgdata) == pid
    finally:
        assert embedded_pg.stop(pgdata)
    assert embedded_pg.postmaster_pid(pgdata) is None
    assert not embedded_pg.stop(pgdata)


async def test_a_stale_pid_file_does_not_block_the_start(tmp_path):
    pgdata = tmp_path / "pg"
    embedded_pg.ensure_running(pgdata)
    embedded_pg.stop(pgdata)
    # A pid file left by a crash whose pid now belongs to another program (here: this one).
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n0\n5432\n\n\n\nready\n")
    assert embedded_pg.postmaster_pid(pgdata) is None
    dsn = embedded_pg.ensure_running(pgdata)
    try:
        assert embedded_pg.postmaster_pid(pgdata) not in (None, os.getpid())
        pool = await create_pool(dsn, 1, 1)
        assert await pool.fetchval("SELECT 1") == 1
        await pool.close()
    finally:
        embedded_pg.stop(pgdata)


async def test_supervisor_restarts_a_killed_server_and_pools_reconnect(tmp_path):
    pgdata = tmp_path / "pg"
    dsn = embedded_pg.ensure_running(pgdata)
    supervisor = embedded_pg.Supervisor(pgdata, dsn, interval_s=0.1)
    pool = await create_pool(dsn, 2, 2)
    try:
        await migrate(pool)
        await pool.execute("INSERT INTO users (user_id) VALUES ('before')")
        assert not supervisor.check_once()
        supervisor.start()
        os.kill(embedded_pg.postmaster_pid(pgdata), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while supervisor.restarts == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert supervisor.restarts == 1
        assert embedded_pg.postmaster_pid(pgdata) is not None
        # The same pool, not a new one: its dead connections are replaced on acquire.
        rows = None
        for _ in range(50):
            try:
                rows = await pool.fetch("SELECT user_id FROM users")
                break
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                await asyncio.sleep(0.1)
        assert rows is not None and [r["user_id"] for r in rows] == ["before"]
    finally:
        supervisor.stop()
        await pool.close()
        embedded_pg.stop(pgdata)
