"""The files that point Ray's CLIs at `make serve`'s cluster, and `memserve env`'s exports."""

import stat
import subprocess

from memserve import cluster_env


def test_write_read_remove(tmp_path):
    exports = cluster_env.write(
        tmp_path, "s3cret", "http://127.0.0.1:26004", "http://127.0.0.1:8000", tmp_path / "bin"
    )
    token = tmp_path / "ray" / "auth_token"
    assert token.read_text() == "s3cret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / cluster_env.ENV_FILE).stat().st_mode) == 0o600
    assert exports["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert exports["RAY_DASHBOARD_ADDRESS"] == exports["RAY_API_SERVER_ADDRESS"]
    assert exports["RAY_AUTH_MODE"] == "token"
    assert cluster_env.read(tmp_path) == exports
    cluster_env.remove(tmp_path)
    assert cluster_env.read(tmp_path) is None and not token.exists()


def test_a_token_file_left_readable_is_narrowed(tmp_path):
    token = tmp_path / "ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("old")
    token.chmod(0o644)
    cluster_env.write(tmp_path, "new", "http://d", "http://s", tmp_path)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "new"


def test_shell_lines_evaluate_in_sh(tmp_path):
    exports = cluster_env.write(
        tmp_path / "it's data", "t", "http://127.0.0.1:1", "http://s", tmp_path / "b in"
    )
    script = cluster_env.shell_lines(exports) + 'printf "%s\\n" "$RAY_AUTH_TOKEN_PATH" "$PATH"'
    out = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin"}
    ).stdout.splitlines()
    assert out == [exports["RAY_AUTH_TOKEN_PATH"], f"{tmp_path / 'b in'}:/usr/bin"]


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMSERVE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cluster_env.data_dir() == tmp_path / "data"
    monkeypatch.setenv("MEMSERVE_DATA_DIR", str(tmp_path / "d"))
    assert cluster_env.data_dir() == tmp_path / "d"
    assert cluster_env.data_dir(tmp_path / "x") == tmp_path / "x"
