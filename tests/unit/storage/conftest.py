import pytest

from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database
from tests.unit.storage.versions_data import done, entry, generations, msg


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


@pytest.fixture
async def two_versions(repo: Repository):
    """User u, session s, messages m1, m2 done in versions 1 and 2; generation 0 (version 1)
    active, generation 1 (version 2) building."""
    pool = repo.pool
    await repo.add_messages("u", "s", [msg("m1"), msg("m2", 1)], None)
    await done(pool, ["m1", "m2"], [1, 2])
    async with pool.acquire() as conn:
        await repo.insert_entries(conn, [entry(m, v) for m in ("m1", "m2") for v in (1, 2)])
    await generations(pool, (0, "active", 1), (1, "building", 2))
    return repo
