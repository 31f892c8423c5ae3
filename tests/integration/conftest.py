"""One local Ray cluster per test session, running the real Serve application over HTTP,
against the machine's PostgreSQL (a throwaway database) and Qdrant local mode."""

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from deployments.local_cluster import free_port, free_port_base
from tests.fixtures.pytest_fixtures import (  # noqa: F401  (session fixtures used below)
    offline_models_env,
    random_llmlingua2_dir,
)
from tests.pg import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


class Running:
    def __init__(self, service, url: str) -> None:
        self.service = service
        self.url = url
        # The key the first start wrote (no MEMSERVE_ADMIN_KEY here): what `make serve` does.
        self.admin_key = (service.settings.data_dir / "admin.key").read_text().strip()

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        """A client that sends `key` (default: the admin key)."""
        headers = {"Authorization": f"Bearer {key or self.admin_key}", **kw.pop("headers", {})}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers, **kw)

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def restart_app(self) -> None:
        """Kill every replica of both applications and deploy them again on the same data."""
        from ray import serve

        from deployments.apps import APP_NAME, index_app

        for app in (APP_NAME, index_app(APP_NAME)):
            serve.delete(app)
        self.service.deploy()


@pytest.fixture(scope="session")
def running(tmp_path_factory, random_llmlingua2_dir):  # noqa: F811
    from deployments.launch import Service
    from serve_app.settings import Settings

    dsn = asyncio.run(create_database("memserve_it"))
    env = {
        "MEMSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "MEMSERVE_PG_DSN": dsn,
        "MEMSERVE_HTTP_PORT": str(free_port()),
        "MEMSERVE_RAY_PORT_BASE": str(free_port_base()),
        "MEMSERVE_WORKER_IDLE_POLL_S": "0.2",
        "MEMSERVE_MAX_BODY_BYTES": "200000",
        # Compression on for every test, through the real llmlingua code, with a small random
        # model (tests/fixtures/random_models.py): test_pipeline.py checks it.
        "MEMSERVE_COMPRESSOR_MODEL": str(random_llmlingua2_dir),
    }
    saved = {k: os.environ.get(k) for k in (*env, "MEMSERVE_ADMIN_KEY")}
    os.environ.pop("MEMSERVE_ADMIN_KEY", None)
    os.environ.update(env)
    service = Service(ROOT / "configs" / "local.yaml", Settings())
    try:
        service.start()
        yield Running(service, f"http://127.0.0.1:{env['MEMSERVE_HTTP_PORT']}")
    finally:
        service.stop()
        asyncio.run(drop_database(dsn))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def agent_key(running) -> str:
    """A tenant key made through the SDK with the admin key: what an agent is given."""
    from memserve import MemoryClient

    with MemoryClient(running.url, running.admin_key) as admin:
        return admin.create_key("agents", "agent-interfaces tests").key
