"""The users routes on a throwaway database with a fake memory index: export as JSON Lines,
import into an empty user only (409 otherwise, 422 naming a bad line), vectors indexed before
the rows are committed, and nothing kept when indexing fails."""

import json

import httpx
import pytest

from serve_app.api import services as services_module
from serve_app.api.app import create_app
from serve_app.api.services import Services
from serve_app.settings import Settings
from serve_app.storage.postgres import Repository
from tests.unit.api.routes.test_routes import ADMIN_KEY, Handle, bearer, fake_authenticator
from tests.unit.storage.conftest import pg_dsn, repo  # noqa: F401  (fixtures used here)
from tests.unit.storage.test_export_repo import USER, _erase, _seed


@pytest.fixture
def app(repo: Repository):  # noqa: F811
    indexed: list[tuple] = []
    fail = {"index": False}

    def apply(user, upserts, deletes):
        if fail["index"] and upserts:
            raise RuntimeError("memory index down")
        indexed.append((user, [u["id"] for u in upserts], deletes))

    memory_index = Handle(apply_vector_changes=apply, delete_user=lambda user, audit=None: True)
    worker = Handle(kick=lambda: None)
    svc = Services(Settings(), memory_index, worker, Handle(), auth=fake_authenticator())

    async def get_repo():
        return repo

    svc.repo = get_repo
    application = create_app(Settings())
    application.dependency_overrides[services_module.services] = lambda: svc
    return application, indexed, fail


def _client(application) -> httpx.AsyncClient:
    # In the test's event loop, where the database pool lives.
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers=bearer(ADMIN_KEY))


async def _export_body(app) -> bytes:
    application, _, _ = app
    async with _client(application) as c:
        r = await c.get(f"/v1/users/{USER}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return r.content


async def test_export_import_round_trip_indexes_every_entry(app, repo):  # noqa: F811
    application, indexed, _ = app
    ids = await _seed(repo)
    body = await _export_body(app)
    async with _client(application) as c:
        assert (await c.get("/v1/users/nobody/export")).status_code == 404
        r = await c.post(f"/v1/users/{USER}/import", content=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "user_not_empty"
    await _erase(repo.pool)
    async with _client(application) as c:
        r = await c.post(f"/v1/users/{USER}/import", content=body)
    assert r.status_code == 200, r.text
    assert r.json()["imported"]["memory"] == 2 and r.json()["imported"]["message"] == 4
    assert indexed == [(USER, sorted(ids), [])]
    assert await _export_body(app) == body


async def test_bad_lines_and_a_failed_index_leave_nothing(app, repo):  # noqa: F811
    application, indexed, fail = app
    ids = sorted(await _seed(repo))
    body = await _export_body(app)
    await _erase(repo.pool)
    lines = body.decode().splitlines(keepends=True)
    async with _client(application) as c:
        r = await c.post(f"/v1/users/{USER}/import", content="".join(lines[:-1]))
        assert r.status_code == 422
        assert "cut off" in r.json()["error"]["message"]
        bad = [
            json.dumps({"type": "memory", "data": {**json.loads(ln)["data"], "id": "nope"}}) + "\n"
            if json.loads(ln)["type"] == "memory"
            else ln
            for ln in lines
        ]
        r = await c.post(f"/v1/users/{USER}/import", content="".join(bad))
        assert r.status_code == 422 and "memory records" in r.json()["error"]["message"]
        assert not await repo.user_exists(USER)

        fail["index"] = True
        r = await c.post(f"/v1/users/{USER}/import", content=body)
        assert r.status_code == 503
        assert not await repo.user_exists(USER)
        fail["index"] = False
        r = await c.post(f"/v1/users/{USER}/import", content=body)
        assert r.status_code == 200
    # the failed attempt's vectors were removed again, then the retry indexed them
    assert indexed == [(USER, [], ids), (USER, ids, [])]
