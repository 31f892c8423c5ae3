"""The fast-path switches: per-cluster ports inside the cluster's own block, no leaks."""

import os
from pathlib import Path

from serve_app.serving_env import cluster_env, colocated_env, haproxy_threads, serving_keys


def test_haproxy_threads_follow_the_node():
    assert [haproxy_threads(n) for n in (1, 2, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 4]
    assert cluster_env(2) == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_NBTHREAD": "1"}


def test_two_clusters_share_no_port_and_no_file():
    a, b = colocated_env(40000, Path("/tmp/a")), colocated_env(41000, Path("/tmp/b"))
    ports = [k for k in a if k.endswith("_PORT")]
    for env, base in ((a, 40000), (b, 41000)):
        # Inside the block's free gap: Ray's own ports are base..base+8, workers from base+100.
        assert all(base + 10 <= int(env[k]) <= base + 99 for k in ports)
    assert not {a[k] for k in ports} & {b[k] for k in ports}
    files = [k for k in a if not k.endswith("_PORT")]
    assert all(a[k].startswith("/tmp/a/") or a[k] == "/tmp/a/haproxy" for k in files)
    assert not {a[k] for k in files} & {b[k] for k in files}


def test_a_default_cluster_does_not_inherit_an_earlier_clusters_switches(monkeypatch):
    from deployments.local_cluster import LocalRayCluster

    fast = LocalRayCluster(40000)
    plain = LocalRayCluster(41000, fast_path=False)
    saved = dict(os.environ)
    try:
        assert fast.env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert not serving_keys(41000, plain.temp_dir) & set(plain.env)
        for key in set(os.environ):
            if key.startswith("RAY_"):
                monkeypatch.delitem(os.environ, key)
        assert fast.export_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        env = plain.export_env()
        assert not serving_keys(41000, plain.temp_dir) & set(env)
        assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ
        assert env["RAY_AUTH_TOKEN"] == plain.env["RAY_AUTH_TOKEN"] != fast.env["RAY_AUTH_TOKEN"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for c in (fast, plain):
            c.temp_dir.rmdir()
