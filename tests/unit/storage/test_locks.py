import pytest

from serve_app.storage.locks import (
    lock_user_exclusive,
    lock_users_shared,
    try_lock_user_shared,
    user_lock_sql,
)


def test_one_key_in_every_form():
    assert user_lock_sql("shared") == (
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 7))"
    )
    assert user_lock_sql("exclusive", wait=False, placeholder="%s") == (
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 7))"
    )
    with pytest.raises(ValueError):
        user_lock_sql("update")  # type: ignore[arg-type]


async def test_an_erase_keeps_writers_of_that_user_out_until_it_commits(repo):
    async with repo.pool.acquire() as eraser, eraser.transaction():
        await lock_user_exclusive(eraser, "u")
        async with repo.pool.acquire() as writer, writer.transaction():
            assert not await try_lock_user_shared(writer, "u")
            assert await try_lock_user_shared(writer, "v")
    async with repo.pool.acquire() as writer, writer.transaction():
        await lock_users_shared(writer, ["u", "v", "u"])
        async with repo.pool.acquire() as other, other.transaction():
            # Shared with shared: writers of one user do not wait for each other.
            assert await try_lock_user_shared(other, "u")
