"""Ray Serve's fast data path: the process-level switches memserve's clusters start with.

Ray Serve reads these from the environment when its processes start, so they belong to the
cluster (the launcher's local cluster, the KubeRay pods, the `ray up` nodes), not to the Serve
config. One table for every profile; `benchmarks/fast_path.py` measures what each one buys.

- HAProxy ingress: each ingress replica serves HTTP itself and HAProxy (C, leastconn)
  forwards from the public port, skipping the Python proxy actor and its per-request RPCs.
- Not `RAY_SERVE_THROUGHPUT_OPTIMIZED` cluster-wide: it also takes the handle router off its
  own loop in the drivers and Ray Data actors of the offline jobs, whose handle calls from
  code without a running event loop (`.remote().result()`) then fail with "No event loop
  running". The replicas get it in their own environment (`one_loop` in the profile's groups).
- One HAProxy thread per node that has few cores: more threads only contend with the replicas.
- HAProxy's own error answers (an ingress replica died mid-request, none is up) are a 503 with
  Retry-After in the API's error shape, not Ray's fixed 500 page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from memserve.models import ErrorBody, ErrorResponse
from serve_app.api.errors import RETRY_AFTER_S

logger = logging.getLogger("ray.serve")

SERVE_FAST_PATH_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
}


def haproxy_threads(node_cpus: int) -> int:
    """HAProxy threads for a node: one on small nodes, up to four (Ray's default) on big ones."""
    return max(1, min(4, node_cpus // 4))


def cluster_env(node_cpus: int) -> dict[str, str]:
    """The fast-path switches for a node with `node_cpus` cores."""
    return {
        **SERVE_FAST_PATH_ENV,
        "RAY_SERVE_HAPROXY_NBTHREAD": str(haproxy_threads(node_cpus)),
    }


def colocated_env(port_base: int, state_dir: Path) -> dict[str, str]:
    """Ports and files of one cluster's HAProxy, so clusters sharing a machine never collide.

    HAProxy's defaults are fixed (/tmp/haproxy-serve, stats 8404, metrics 9101, replica ports
    30000-31000, Serve's fallback proxy 8500 / 9500); these take them from the cluster's own
    port block (`base + 10 .. base + 99`, which `deployments/local_cluster.py` leaves free) and
    its own temp directory. HAProxy binds its stats and metrics ports on every interface.
    """
    state = Path(state_dir) / "haproxy"
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(port_base + 10),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(port_base + 11),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(port_base + 12),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(port_base + 13),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port_base + 20),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port_base + 49),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(port_base + 50),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(port_base + 79),
    }


def serving_keys(port_base: int, state_dir: Path) -> set[str]:
    """Every variable the two functions above may set."""
    return set(cluster_env(1)) | set(colocated_env(port_base, state_dir))


# Ray writes HAProxy's page for 502/503/504 to `500.http` beside the node's config file
# (`<dir of RAY_SERVE_HAPROXY_CONFIG_FILE_LOC>/<node id>/`) when the HAProxy manager starts, with
# no setting to change it, and HAProxy reads it at every reload.
_RAY_HAPROXY_CONFIG = "/tmp/haproxy-serve/haproxy.cfg"


def gateway_error_page() -> bytes:
    """The raw HTTP answer HAProxy gives when it cannot get one from an ingress replica."""
    body = ErrorResponse(
        error=ErrorBody(
            code="unavailable",
            message="no ingress replica answered; the request may be retried",
        )
    ).model_dump_json(exclude_none=True)
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body.encode()


def install_gateway_error_page(node_id: str, env: Mapping[str, str] = os.environ) -> Path | None:
    """Replace Ray's 500 page of this node's HAProxy by `gateway_error_page()`; HAProxy uses it
    from its next reload, which follows every change of the ingress replicas. Called by each
    ingress replica as it starts, so before HAProxy's reload that adds it. Returns the page's
    path, or None where this node runs no HAProxy."""
    config = env.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", _RAY_HAPROXY_CONFIG)
    page = Path(config).parent / node_id / "500.http"
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or not page.parent.is_dir():
        return None
    want = gateway_error_page()
    try:
        if page.is_file() and page.read_bytes() == want:
            return page
        tmp = page.with_name(f".500.http.{os.getpid()}")
        tmp.write_bytes(want)
        os.replace(tmp, page)  # never a half-written page for a reload to read
    except OSError as e:  # the service runs without it: clients then see Ray's 500 page
        logger.warning("could not install HAProxy's error page at %s: %s", page, e)
        return None
    return page
