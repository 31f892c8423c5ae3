"""`make serve`'s launcher without a cluster: the config it reads and its command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from deployments import launch
from deployments.launch import load_config, main
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def write_config(tmp_path: Path, http_options: dict | None) -> Path:
    config = {"applications": [{"name": "memserve", "import_path": "deployments.app:build_app"}]}
    if http_options is not None:
        config["http_options"] = http_options
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_file_keeps_its_address_when_the_environment_names_none(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMSERVE_HTTP_PORT", raising=False)
    monkeypatch.delenv("MEMSERVE_HTTP_HOST", raising=False)
    path = write_config(tmp_path, {"host": "0.0.0.0", "port": 8123})
    config = load_config(path, Settings())
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8123}
    assert config["applications"][0]["import_path"] == "deployments.app:build_app"


def test_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSERVE_HTTP_PORT", "9001")
    monkeypatch.setenv("MEMSERVE_HTTP_HOST", "127.0.0.2")
    path = write_config(tmp_path, {"host": "0.0.0.0", "port": 8123})
    assert load_config(path, Settings())["http_options"] == {"host": "127.0.0.2", "port": 9001}


def test_settings_fill_an_address_the_file_leaves_out(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMSERVE_HTTP_PORT", raising=False)
    monkeypatch.delenv("MEMSERVE_HTTP_HOST", raising=False)
    settings = Settings()
    config = load_config(write_config(tmp_path, None), settings)
    assert config["http_options"] == {"host": settings.http_host, "port": settings.http_port}


def test_the_local_config_deploys_the_builders():
    config = load_config(ROOT / "configs" / "local.yaml", Settings())
    assert [a["import_path"] for a in config["applications"]] == [
        "deployments.app:build_index_app",
        "deployments.app:build_app",
    ]


class FakeService:
    started: list[Path] = []
    stopped = 0

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path

    def start(self) -> None:
        FakeService.started.append(self.config_path)
        raise RuntimeError("start failed")

    def stop(self) -> None:
        FakeService.stopped += 1


@pytest.fixture
def fake_service(monkeypatch):
    FakeService.started, FakeService.stopped = [], 0
    monkeypatch.setattr(launch, "Service", FakeService)
    # main() installs SIGINT/SIGTERM handlers; pytest's own must stay.
    monkeypatch.setattr(launch.signal, "signal", lambda *a: None)
    return FakeService


def test_main_defaults_to_the_local_config_and_stops_what_it_started(fake_service):
    with pytest.raises(RuntimeError, match="start failed"):
        main([])
    assert fake_service.started == [Path("configs/local.yaml")]
    assert fake_service.stopped == 1


def test_main_takes_the_config_path(fake_service):
    with pytest.raises(RuntimeError):
        main(["configs/t4.yaml"])
    assert fake_service.started == [Path("configs/t4.yaml")]


def test_main_refuses_extra_arguments(fake_service):
    with pytest.raises(SystemExit):
        main(["configs/local.yaml", "configs/t4.yaml"])
    assert fake_service.started == []


def test_the_launcher_says_where_the_admin_key_is(tmp_path):
    service = launch.Service(
        Path("configs/local.yaml"), Settings(data_dir=tmp_path, admin_key=None)
    )
    where = service.admin_key_source()
    assert where == str((tmp_path / "admin.key").resolve())
    assert (tmp_path / "admin.key").read_text().startswith("ms_")
    env = Settings(data_dir=tmp_path / "other", admin_key=SecretStr("ms_env-key-0000000000000"))
    assert (
        launch.Service(Path("configs/local.yaml"), env).admin_key_source() == "MEMSERVE_ADMIN_KEY"
    )
    assert not (tmp_path / "other").exists()
