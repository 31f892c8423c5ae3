"""Ray Serve's fast data path: the process-level switches memserve's clusters start with.

Ray Serve reads these from the environment when its processes start, so they belong to the
cluster (the launcher's local cluster, the KubeRay pods, the `ray up` nodes), not to the Serve
config. One table for every profile; `benchmarks/fast_path.py` measures what each one buys.

- HAProxy ingress: each ingress replica serves HTTP itself and HAProxy (C, leastconn)
  forwards from the public port, skipping the Python proxy actor and its per-request RPCs.
- One HAProxy thread per node that has few cores: more threads only contend with the replicas.
"""

from __future__ import annotations

from pathlib import Path

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
