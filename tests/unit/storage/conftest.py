import pytest

from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database


@pytest.fixture
async def pg_dsn():
    dsn = await create_database()
    yield dsn
    await drop_database(dsn)


@pytest.fixture
async def repo(pg_dsn):
    pool = await create_pool(pg_dsn, 1, 4)
    await migrate(pool)
    yield Repository(pool)
    await pool.close()
