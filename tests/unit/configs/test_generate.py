"""configs/: the committed Serve configs are the generator's output and pass Ray Serve's
own schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from configs import generate
from configs.serve_config import (
    APP_NAME,
    IMPORT_PATH,
    INDEX_IMPORT_PATH,
    serve_config,
)
from serve_app.profiles import PROFILES, LLMGroup

ROOT = Path(generate.__file__).resolve().parent.parent
SERVE_FILES = sorted((ROOT / "configs").glob("*.yaml"))


def test_committed_files_match_the_generator():
    rendered = generate.render()
    for rel, text in rendered.items():
        path = ROOT / rel
        assert path.exists(), f"{rel} missing: run python -m configs.generate"
        assert path.read_text() == text, f"{rel} is stale: run python -m configs.generate"
    assert generate.main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    assert generate.main(["--root", str(tmp_path)]) == 0  # writes a fresh tree
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "configs" / "t4.yaml").write_text("# edited by hand\n")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    assert "configs/t4.yaml" in capsys.readouterr().out


def test_one_serve_config_per_profile():
    assert {p.stem for p in SERVE_FILES} == set(PROFILES)


@pytest.mark.parametrize("path", SERVE_FILES, ids=lambda p: p.name)
def test_serve_config_validates_against_serve_schema(path):
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    profile = PROFILES[path.stem]
    index, app = schema.applications
    # The MemoryIndex answers POST /v1/search itself; the main app serves every other route.
    assert (index.name, index.route_prefix) == (f"{APP_NAME}-index", "/v1/search")
    assert index.import_path == INDEX_IMPORT_PATH
    assert [d.name for d in index.deployments] == ["MemoryIndex"]
    assert app.name == APP_NAME and app.route_prefix == "/"
    assert app.import_path == IMPORT_PATH
    assert app.args == index.args == {"profile": profile.name}
    assert [d.name for d in app.deployments] == [n for n in profile.groups() if n != "MemoryIndex"]
    assert schema.http_options.host == profile.http_host
    assert schema.http_options.port == profile.http_port


def test_local_config_is_loopback_on_8000():
    data = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    assert data["http_options"] == {"host": "127.0.0.1", "port": 8000}


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=lambda p: p.name)
def test_deployment_entries_carry_the_profile_options(profile):
    entries = {
        d["name"]: d for app in serve_config(profile)["applications"] for d in app["deployments"]
    }
    assert set(entries) == set(profile.groups())
    for name, group in profile.groups().items():
        entry = entries[name]
        assert entry["max_ongoing_requests"] == group.max_ongoing_requests
        assert entry["max_queued_requests"] == group.max_queued_requests
        if group.autoscaling:
            assert entry["autoscaling_config"] == group.autoscaling.model_dump()
            assert "num_replicas" not in entry
        else:
            assert entry["num_replicas"] == group.num_replicas
        if isinstance(group, LLMGroup):
            # Serve LLM's own actor options and placement group must survive the config.
            assert "ray_actor_options" not in entry
            assert "placement_group_bundles" not in entry
        else:
            assert entry["ray_actor_options"] == group.ray_actor_options()
        if name in ("Embedder", "Compressor"):
            assert entry["user_config"] == group.user_config()
        else:
            assert "user_config" not in entry
