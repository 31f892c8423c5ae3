"""Backup of a running embedded service (pgserver's pg_dump) and restore into an empty data
directory: the same rows, the same searches with the same ids and scores, vectors of another
model's generation left to the catch-up sweep, and no restore over existing data."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from serve_app.ops import backup, restore
from serve_app.retrieval.memory_index import MemoryIndex
from serve_app.settings import Settings
from serve_app.storage import embedded_pg
from serve_app.storage.postgres import Repository, create_pool, migrate
from tests.unit.retrieval.memory_data import DIM, BowModel, bow, embed, row, store_rows


@pytest.fixture(autouse=True)
def _embedded_only(monkeypatch):
    """Settings of these tests name only their own data directories: a MEMSERVE_* variable
    left by another test of the process (the integration session sets MEMSERVE_PG_DSN) would
    point backup and restore at that service's database."""
    for name in [n for n in os.environ if n.startswith("MEMSERVE_")]:
        monkeypatch.delenv(name)


TEXTS = ["a dog", "a dog and a cat", "Paris pizza", "a guitar", "a wedding in Paris"]
QUERIES = ["dog", "pizza in Paris", "guitar or violin"]


async def _open(data_dir) -> MemoryIndex:
    dsn = embedded_pg.ensure_running(data_dir / "pg")
    pool = await create_pool(dsn, 1, 1)
    await migrate(pool)  # as the service does at start (nothing to do after a restore)
    await pool.close()
    return await MemoryIndex.open(
        Settings(pg_dsn=dsn, data_dir=data_dir), "served", DIM, embed, BowModel
    )


def ranked(hits: list[tuple[str, float]]) -> list[tuple[float, set[str]]]:
    """Scores in order, each with the ids that have it (the order among equal scores is the
    vector store's insertion order, which a restore does not keep)."""
    out: list[tuple[float, set[str]]] = []
    for i, score in hits:
        if out and out[-1][0] == score:
            out[-1][1].add(i)
        else:
            out.append((score, {i}))
    return out


async def _searches(index: MemoryIndex) -> list[list[tuple[float, set[str]]]]:
    out = []
    for q in QUERIES:
        for strategy in ("embedding", "hybrid"):
            found = await index.search("u", q, 5, {}, strategy)
            out.append(ranked([(r["id"], r["score"]) for r in found["results"]]))
    return out


def _encode(texts):
    return [bow(t) for t in texts]


async def test_backup_of_a_running_service_restores_the_same_searches(tmp_path):
    src, dst, dest = tmp_path / "src", tmp_path / "dst", tmp_path / "backup"
    index = await _open(src)
    try:
        rows = [row("u", "s", i, t) for i, t in enumerate(TEXTS)]
        await index.index(await store_rows(Repository(index.pool), rows), 1)
        other = await index.generations.create("other")
        assert await index.generations.sweep_generation(other["generation"]) == len(TEXTS)
        before = await _searches(index)
        # online: the service's embedded server is running and stays so
        manifest = await asyncio.to_thread(backup.backup, Settings(data_dir=src), dest)
        assert (src / "pg" / "postmaster.pid").exists()
    finally:
        await index.close()
        embedded_pg.stop(src / "pg")
    assert manifest["seen_before_dump"] == {"users": 1, "messages": 0, "memories": len(TEXTS)}
    assert json.loads((dest / backup.MANIFEST).read_text())["format"] == backup.FORMAT

    target = Settings(data_dir=dst, embedding_model="served")
    done = await asyncio.to_thread(restore.restore, target, dest, _encode)
    assert not (dst / "pg" / "postmaster.pid").exists()  # started for the restore, stopped
    assert (done["users"], done["memories"]) == (1, len(TEXTS))
    assert done["vectors_per_generation"] == {0: len(TEXTS), other["generation"]: -1}

    index = await _open(dst)
    try:
        assert await _searches(index) == before
        # the other model's generation is filled again by the sweep, as the service does
        assert await index.generations.missing(other["generation"]) == len(TEXTS)
        assert await index.generations.sweep_generation(other["generation"]) == len(TEXTS)
    finally:
        await index.close()
        embedded_pg.stop(dst / "pg")

    with pytest.raises(SystemExit, match="holds a database already"):
        await asyncio.to_thread(restore.restore, target, dest, _encode)
    with pytest.raises(SystemExit, match="not empty"):
        await asyncio.to_thread(backup.backup, Settings(data_dir=src), dest)
    with pytest.raises(SystemExit, match="not a backup"):
        await asyncio.to_thread(restore.restore, Settings(data_dir=tmp_path / "x"), tmp_path)
