"""The typed builder: a profile's options on every replica group, settings checked first.

No cluster: `build_app` only binds deployments; its migrations run on a throwaway database.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from deployments.app import (
    build_app,
    build_index_app,
    compression_status,
    compressor_model,
    resolve_settings,
)
from serve_app.api.readiness import compression_without_compressor, report
from serve_app.profiles import LOCAL, T4, BatchedGroup
from serve_app.settings import Settings
from tests.pg import create_database, drop_database


@pytest.fixture
def pg_dsn():
    dsn = asyncio.run(create_database("memserve_app"))
    yield dsn
    asyncio.run(drop_database(dsn))


def bound_deployments(app) -> dict:
    """Every deployment bound into the application graph, by name."""
    found: dict = {}

    def walk(node) -> None:
        d = getattr(node, "_bound_deployment", None)
        if d is None or d.name in found:
            return
        found[d.name] = d
        for arg in (*d.init_args, *d.init_kwargs.values()):
            walk(arg)

    walk(app)
    return found


def test_build_app_applies_the_profile_to_every_group(
    pg_dsn, tmp_path, monkeypatch, random_llmlingua2_dir
):
    monkeypatch.setenv("MEMSERVE_PG_DSN", pg_dsn)
    monkeypatch.setenv("MEMSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMSERVE_COMPRESSOR_MODEL", str(random_llmlingua2_dir))

    deployments = bound_deployments(build_app({"profile": "local"}))
    # The MemoryIndex is its own application's ingress (POST /v1/search), not in the main one.
    assert "MemoryIndex" not in deployments
    index = bound_deployments(build_index_app({"profile": "local"}))
    assert list(index) == ["MemoryIndex"]
    deployments.update(index)

    # The local profile names no compressor model: the group runs because the settings do.
    groups = {**LOCAL.groups(), "Compressor": LOCAL.compressor}
    assert set(deployments) == set(groups)
    for name, group in groups.items():
        d = deployments[name]
        assert d.ray_actor_options == group.ray_actor_options(), name
        assert d.max_ongoing_requests == group.max_ongoing_requests, name
        assert d.max_queued_requests == group.max_queued_requests, name
        assert d.num_replicas == group.num_replicas, name
        if isinstance(group, BatchedGroup):
            assert d.user_config == group.user_config(), name


def test_build_app_without_a_compressor_model_leaves_the_group_out(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSERVE_PG_DSN", pg_dsn)
    monkeypatch.setenv("MEMSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMSERVE_COMPRESSOR_MODEL", str(tmp_path / "no-such-model"))

    deployments = bound_deployments(build_app({"profile": "local"}))

    assert set(deployments) == set(LOCAL.groups()) - {"MemoryIndex"}
    assert "Compressor" not in deployments


def test_build_app_refuses_unknown_args_and_profiles():
    with pytest.raises(ValidationError):
        build_app({"profil": "local"})
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        build_app({"profile": "nope"})


def test_external_store_profiles_need_their_urls(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEMSERVE_PG_DSN", raising=False)
    monkeypatch.delenv("MEMSERVE_QDRANT_URL", raising=False)
    with pytest.raises(ValueError, match="MEMSERVE_PG_DSN"):
        resolve_settings(profile_embedded=False)
    monkeypatch.setenv("MEMSERVE_PG_DSN", "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="MEMSERVE_QDRANT_URL"):
        resolve_settings(profile_embedded=False)
    monkeypatch.setenv("MEMSERVE_QDRANT_URL", "http://qdrant.test:6333")
    monkeypatch.delenv("MEMSERVE_ADMIN_KEY", raising=False)
    settings = resolve_settings(profile_embedded=False)
    assert settings.data_dir == tmp_path.resolve()
    # Every replica gets the one admin key: here the one the build wrote.
    written = (tmp_path / "admin.key").read_text().strip()
    assert settings.admin_key is not None and settings.admin_key.get_secret_value() == written
    monkeypatch.setenv("MEMSERVE_ADMIN_KEY", "ms_from-the-environment-000000")
    key = resolve_settings(profile_embedded=False).admin_key
    assert key is not None and key.get_secret_value() == "ms_from-the-environment-000000"


def test_compressor_model_prefers_the_environment_then_the_profile(monkeypatch):
    monkeypatch.delenv("MEMSERVE_COMPRESSOR_MODEL", raising=False)
    assert compressor_model(Settings(), T4) == T4.compressor.model
    assert compressor_model(Settings(), LOCAL) == Settings().compressor_model
    monkeypatch.setenv("MEMSERVE_COMPRESSOR_MODEL", "/models/mine")
    assert compressor_model(Settings(), T4) == "/models/mine"


def test_compression_status_says_why(monkeypatch, tmp_path, random_llmlingua2_dir):
    no_group = LOCAL.model_copy(update={"compressor": None})
    status = compression_status(Settings(), no_group)
    assert status == {
        "enabled": False,
        "model": None,
        "reason": "profile 'local' has no compressor group",
        "rate": None,
        "required": False,
    }

    monkeypatch.setenv("MEMSERVE_COMPRESSOR_MODEL", str(random_llmlingua2_dir))
    settings = Settings()
    status = compression_status(settings, LOCAL)
    assert status["enabled"] is True
    assert status["model"] == str(random_llmlingua2_dir)
    assert status["rate"] == settings.compression_rate

    monkeypatch.setenv("MEMSERVE_COMPRESSOR_MODEL", str(tmp_path / "missing"))
    status = compression_status(Settings(), LOCAL)
    assert status["enabled"] is False and status["rate"] is None and status["reason"]
    # The local profile names no model: compression is optional there, readiness holds.
    assert status["required"] is False
    assert compression_without_compressor(status)["ok"] is True


def test_a_gpu_profile_without_its_compressor_weights_is_not_ready(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMSERVE_COMPRESSOR_MODEL", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = compression_status(Settings(), T4)
    assert status["model"] == T4.compressor.model
    assert (status["enabled"], status["required"]) == (False, True)
    assert "not in the local Hugging Face cache" in status["reason"]

    check = compression_without_compressor(status)
    assert check["ok"] is False
    assert check["error"].startswith("profile expects compression, which is off: ")
    code, body = report(
        {
            "postgresql": {"ok": True},
            "memory_index": {"ok": True, "qdrant": "server"},
            "embedder": {"ok": True},
            "ingest_worker": {"ok": True, "compression": check},
        }
    )
    assert (code, body["status"], body["checks"]["compressor"]["ok"]) == (503, "not_ready", False)
