"""The seeded database of the job repositories' tests: user u, session s, three entries."""

from datetime import UTC, datetime

import pytest

from serve_app.model.entries import EntryRow, entry_id
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.pg import create_database, drop_database

T0 = datetime(2023, 5, 1, tzinfo=UTC)


@pytest.fixture
async def seeded():
    """A migrated database with user u, session s and entries of messages m1..m3."""
    dsn = await create_database()
    pool = await create_pool(dsn, 1, 2)
    await migrate(pool)
    repo = Repository(pool)
    await pool.execute("INSERT INTO users (user_id) VALUES ('u')")
    await pool.execute("INSERT INTO sessions (user_id, session_id) VALUES ('u', 's')")
    async with pool.acquire() as conn:
        await repo.insert_entries(
            conn,
            [
                EntryRow(entry_id("u", "s", "message", [m]), "u", "s", "message", f"text {m}",
                         f"text {m}", T0, "Monday", "Ann", [m], None, {}, None, "minilm")
                for m in ("m1", "m2", "m3")
            ],
        )  # fmt: skip
    await pool.close()
    yield dsn
    await drop_database(dsn)


def _ids():
    return [entry_id("u", "s", "message", [m]) for m in ("m1", "m2", "m3")]


def entry_ids() -> list[str]:
    return [entry_id("u", "s", "message", [m]) for m in ("m1", "m2", "m3")]
