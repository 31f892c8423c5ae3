"""One local Ray cluster per test session, running the real Serve application over HTTP,
against the machine's PostgreSQL (a throwaway database) and Qdrant local mode."""

import asyncio
import os
import random
import socket
from pathlib import Path

import httpx
import pytest

from tests.fixtures.pytest_fixtures import (  # noqa: F401  (session fixtures used below)
    offline_models_env,
    random_llmlingua2_dir,
)
from tests.pg import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_base() -> int:
    # Ray needs ~1000 consecutive ports from the base (workers); pick a quiet block >= 30000.
    for _ in range(50):
        base = random.randrange(30000, 60000, 1000)
        if all(_port_free(base + i) for i in range(10)):
            return base
    raise RuntimeError("no free port block for Ray")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Running:
    def __init__(self, service, url: str) -> None:
        self.service = service
        self.url = url

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    def restart_app(self) -> None:
        """Kill every replica of the application and deploy it again on the same data."""
        from ray import serve

        serve.delete("memserve")
        self.service.deploy()


@pytest.fixture(scope="session")
def running(tmp_path_factory, random_llmlingua2_dir):  # noqa: F811
    from deployments.launch import Service
    from serve_app.settings import Settings

    dsn = asyncio.run(create_database("memserve_it"))
    env = {
        "MEMSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "MEMSERVE_PG_DSN": dsn,
        "MEMSERVE_HTTP_PORT": str(_free_port()),
        "MEMSERVE_RAY_PORT_BASE": str(_free_port_base()),
        "MEMSERVE_WORKER_IDLE_POLL_S": "0.2",
        "MEMSERVE_MAX_BODY_BYTES": "200000",
        # Compression on for every test, through the real llmlingua code, with a small random
        # model (tests/fixtures/random_models.py): test_pipeline.py checks it.
        "MEMSERVE_COMPRESSOR_MODEL": str(random_llmlingua2_dir),
    }
    saved = {k: os.environ.get(k) for k in env}
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
