"""The embedded default: a PostgreSQL started from the pgserver package under the data dir."""

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
