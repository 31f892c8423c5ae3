"""The MemoryIndex Serve shell without a cluster: constructed as Serve constructs it, with a
bag-of-words query encoder, against the machine's PostgreSQL and the embedded vector store."""

from __future__ import annotations

import asyncio

import pytest

import deployments.memory_index as shell_module
from deployments.memory_index import MemoryIndexDeployment
from serve_app.settings import Settings
from tests.unit.retrieval.memory_data import DIM, BowModel, bow, row, store_rows
from tests.unit.storage.conftest import pg_dsn, repo  # noqa: F401  (fixtures used here)

# What the other replica groups and the job drivers call on this deployment.
CALLED = {
    "search": "Ingress",
    "update_memory": "Ingress",
    "delete_memory": "Ingress",
    "delete_user": "Ingress",
    "ready": "Ingress",
    "generation_status": "Ingress, jobs",
    "rollback_generation": "Ingress, jobs",
    "index": "IngestWorker",
    "apply_vector_changes": "consolidate",
    "neighbours": "consolidate, link",
    "create_generation": "reembed",
    "create_memory_version": "reextract",
    "index_generation": "reembed, reextract",
    "mark_members": "reembed",
    "delete_from_generation": "reextract",
    "sweep_generation": "reembed, reextract",
    "generation_missing": "reembed, reextract",
    "activate_generation": "reembed, reextract, jobs",
    "count_vectors": "tests",
}


class QueryEncoder:
    """The served model, in process: what `load_encoder` gives the shell."""

    dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return [bow(t) for t in texts]


@pytest.fixture
async def shell(pg_dsn, repo, tmp_path, monkeypatch):  # noqa: F811
    encoder = QueryEncoder()
    loaded = []
    monkeypatch.setattr(shell_module, "_load_model", BowModel)
    monkeypatch.setattr(shell_module, "load_encoder", lambda *args: loaded.append(args) or encoder)
    env = Settings(pg_dsn=pg_dsn, data_dir=tmp_path, embedding_model="served").model_dump()
    d = MemoryIndexDeployment.__new__(MemoryIndexDeployment)
    await d.__init__(env)  # Serve awaits an async constructor
    assert loaded == [("served", "onnx", 1, tmp_path / "models")]
    d.encoder = encoder
    yield d
    d._maintenance.cancel()
    await d.core.close()


def test_the_shell_exposes_what_its_callers_call():
    for name in CALLED:
        assert callable(getattr(MemoryIndexDeployment, name, None)), name


async def test_the_shell_serves_search_and_edits(shell, repo):  # noqa: F811
    rows = [row("u", "s", i, t) for i, t in enumerate(["a dog", "a cat", "Paris pizza"])]
    await shell.index(await store_rows(repo, rows), 1)
    found = await shell.search("u", "pizza", 1, {}, "hybrid")
    [hit] = found["results"]
    assert hit["text"] == "Paris pizza"
    edited = await shell.update_memory("u", hit["id"], {"memory": "Rome pizza"})
    assert edited["text"] == "Rome pizza"
    assert await shell.delete_memory("u", hit["id"])
    assert await shell.count_vectors("u") == 2
    [again] = (await shell.search("u", "pizza", 1, {}, "hybrid"))["results"]
    assert again["text"] == "a dog" or again["text"] == "a cat"
    ready = await shell.ready()
    assert ready["index_generation"] == 0
    # Queries and the edited text were embedded in process; the repeated query hit the cache.
    assert shell.encoder.calls == [["pizza"], ["Rome pizza"]]
    assert ready["query_encoding"]["cache_hits"] == 1
    assert await shell.delete_user("u")
    assert await shell.search("u", "pizza", 1, {}, "hybrid") is None


async def test_the_shell_runs_a_rebuild_and_its_rollback(shell, repo):  # noqa: F811
    await shell.index(await store_rows(repo, [row("u", "s", 0, "a dog")]), 1)
    created = await shell.create_generation("other")
    n = created["generation"]
    assert await shell.generation_missing(n) == 1
    assert await shell.sweep_generation(n) == 1
    switched = await shell.activate_generation(n)
    assert switched["active"] == n
    assert [g["status"] for g in shell.generation_status()["generations"]] == [
        "previous",
        "active",
    ]
    assert (await shell.rollback_generation())["active"] == 0


async def test_the_maintenance_loop_runs_until_the_replica_goes(shell):
    task = shell._maintenance
    await asyncio.sleep(0)
    assert not task.done()
    shell.__del__()
    with pytest.raises(asyncio.CancelledError):
        await task
