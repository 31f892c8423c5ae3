import pytest

from serve_app.storage.postgres import create_pool, migrate
from tests.pg import create_database, drop_database


@pytest.fixture
async def pool():
    dsn = await create_database()
    p = await create_pool(dsn, 1, 8)
    await migrate(p)
    yield p
    await p.close()
    await drop_database(dsn)
