"""The MemoryIndex Serve shell without a cluster: constructed as Serve constructs it, with a
bag-of-words query encoder, against the machine's PostgreSQL and the embedded vector store."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import deployments.memory_index as shell_module
from deployments.handles import InProcess
from serve_app.api import services
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


# The class as written (Serve's ingress wrapper subclasses it and serves the search app).
MemoryIndexDeployment = next(
    c
    for c in shell_module.MemoryIndexDeployment.__mro__[1:]
    if c.__qualname__ == "MemoryIndexDeployment"
)


class QueryEncoder:
    """The served model, in process: what `load_encoders` gives the shell (one for queries,
    one for entries)."""

    dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return [bow(t) for t in texts]


@pytest.fixture
async def shell(pg_dsn, repo, tmp_path, monkeypatch):  # noqa: F811
    encoder, entries = QueryEncoder(), QueryEncoder()
    loaded = []
    monkeypatch.setattr(shell_module, "_load_model", BowModel)
    monkeypatch.setattr(
        shell_module, "load_encoders", lambda *args: loaded.append(args) or (encoder, entries)
    )
    monkeypatch.setattr(services, "_installed", None)
    monkeypatch.delenv("MEMSERVE_ADMIN_KEY", raising=False)
    env = Settings(pg_dsn=pg_dsn, data_dir=tmp_path, embedding_model="served").model_dump()
    d = MemoryIndexDeployment.__new__(MemoryIndexDeployment)
    await d.__init__(env)  # Serve awaits an async constructor
    assert loaded == [("served", "onnx-int8", 1, tmp_path / "models")]
    d.encoder, d.entry_encoder = encoder, entries
    yield d
    d._maintenance.cancel()
    await d.core.close()


def search_client(admin_key: str | None) -> httpx.AsyncClient:
    """HTTP to the replica's search app as Serve gives it a request: mounted at its route
    prefix (the ASGI root_path), the path whole."""
    transport = httpx.ASGITransport(app=shell_module.app, root_path="/v1/search")
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    return httpx.AsyncClient(transport=transport, base_url="http://index", headers=headers)


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
    # Queries and the edited text were embedded in process, each by its own encoder; the
    # repeated query hit the cache.
    assert shell.encoder.calls == [["pizza"]]
    assert shell.entry_encoder.calls == [["Rome pizza"]]
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


async def test_post_search_is_answered_in_the_replica_that_holds_the_index(
    shell,
    repo,  # noqa: F811
    tmp_path,
):
    # The routes get this replica's Services: the index in process, no handle.
    svc = await services.services()
    assert svc is shell.services and isinstance(svc.memory_index, InProcess)
    assert svc.admin_key == (tmp_path / "admin.key").read_text().strip()
    rows = [row("u", "s", i, t) for i, t in enumerate(["a dog", "a cat", "Paris pizza"])]
    await shell.index(await store_rows(repo, rows), 1)
    async with search_client(svc.admin_key) as c:
        r = await c.post("/v1/search", json={"user_id": "u", "query": "pizza", "limit": 1})
        assert r.status_code == 200, r.text
        assert [m["memory"] for m in r.json()["results"]] == ["Paris pizza"]
        assert r.headers["x-request-id"]
        # The whole API's error answers, from this app too.
        r = await c.post("/v1/search", json={"user_id": "nobody", "query": "pizza"})
        assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_user")
        r = await c.post("/v1/search", json={"user_id": "u", "query": "q", "limit": 0})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
        r = await c.post("/v1/search", content=b"{not json", headers={"content-type": "x"})
        assert r.status_code == 422
        r = await c.get("/v1/search")
        assert r.status_code == 405 and "error" in r.json()
        r = await c.post("/v1/search/more", json={"user_id": "u", "query": "pizza"})
        assert r.status_code == 404 and "error" in r.json()
    async with search_client(None) as c:
        r = await c.post("/v1/search", json={"user_id": "u", "query": "pizza"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_key")
        assert r.headers["www-authenticate"].startswith("Bearer")
    async with search_client("ms_not-a-key") as c:
        r = await c.post("/v1/search", json={"user_id": "u", "query": "pizza"})
        assert r.status_code == 401
