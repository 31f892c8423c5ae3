"""The Ingress shell: it serves the API application and installs the Services its routes get."""

import asyncio
import inspect

from fastapi.testclient import TestClient

import deployments.ingress as ingress
from serve_app.api import services


class FakeHandle:
    def __init__(self) -> None:
        self.options_given: list[dict] = []
        self.by_value = object()

    def options(self, **kw):
        self.options_given.append(kw)
        return self.by_value


def test_the_replica_installs_its_services_for_the_routes(monkeypatch, tmp_path):
    monkeypatch.setattr(services, "_installed", None)
    monkeypatch.delenv("MEMSERVE_ADMIN_KEY", raising=False)
    c = TestClient(ingress.app, raise_server_exceptions=False)
    r = c.get("/v1/generations")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable")
    cls = ingress.IngressDeployment
    # The class as written (Serve's wrapper subclasses it).
    user_cls = next(c for c in cls.__mro__[1:] if c.__qualname__ == cls.__qualname__)
    assert not inspect.iscoroutinefunction(user_cls.__init__)
    handle = FakeHandle()
    instance = object.__new__(user_cls)
    user_cls.__init__(instance, {"data_dir": tmp_path}, handle, handle, 3, memory_index=handle)
    assert asyncio.run(services.services()) is instance.services
    # The routes call the other groups by value, over their replicas' gRPC servers.
    assert handle.options_given == [{"_by_reference": False}] * 3
    assert instance.services.jobs is not None and instance.services.memory_index is handle.by_value
    # No MEMSERVE_ADMIN_KEY: the replica reads (here: writes) the data directory's key.
    assert instance.services.admin_key == (tmp_path / "admin.key").read_text().strip()
    assert instance.services.replicas == 3
