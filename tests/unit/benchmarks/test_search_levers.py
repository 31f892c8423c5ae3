"""The lever benchmark's pure parts: variant configs, CPU accounting, ratios."""

import yaml

from benchmarks.common import LOCAL_CONFIG
from benchmarks.search_levers import cpu_per_request, ratios, variant_config


def _deployments(config: dict) -> list[dict]:
    return [d for app in config["applications"] for d in app["deployments"]]


def test_access_log_variant_turns_it_on_in_every_deployment(tmp_path):
    assert variant_config("memserve", tmp_path) == LOCAL_CONFIG
    assert variant_config("exact_queries", tmp_path) == LOCAL_CONFIG
    assert variant_config("engine_vectors", tmp_path) == LOCAL_CONFIG
    shipped = yaml.safe_load(LOCAL_CONFIG.read_text())
    assert len(shipped["applications"]) == 2
    assert all(d["logging_config"] == {"enable_access_log": False} for d in _deployments(shipped))
    logged = yaml.safe_load(variant_config("access_log", tmp_path).read_text())
    deployments = _deployments(logged)
    assert {d["name"] for d in deployments} == {d["name"] for d in _deployments(shipped)}
    assert "MemoryIndex" in {d["name"] for d in deployments}
    assert all(d["logging_config"] == {"enable_access_log": True} for d in deployments)
    # Everything else as shipped.
    for d in deployments + _deployments(shipped):
        d.pop("logging_config")
    assert logged == shipped


def test_separate_loops_variant_drops_only_the_replicas_one_loop_environment(tmp_path):
    shipped = yaml.safe_load(LOCAL_CONFIG.read_text())
    groups = _deployments(shipped)
    assert all("runtime_env" in d["ray_actor_options"] for d in groups)
    separate = yaml.safe_load(variant_config("separate_loops", tmp_path).read_text())
    for d in groups:
        d["ray_actor_options"].pop("runtime_env")
    assert separate == shipped


def test_cpu_per_request_adds_up_processes_by_label():
    before = {1: ("MemoryIndex", 10.0), 2: ("Ingress", 5.0), 3: ("postgres", 1.0)}
    after = {
        1: ("MemoryIndex", 12.0),
        2: ("Ingress", 5.5),
        3: ("postgres", 1.2),
        4: ("postgres", 0.3),  # a backend started during the run counts from zero
        5: ("other", 0.00001),
    }
    assert cpu_per_request(before, after, 100) == {
        "MemoryIndex": 20.0,
        "Ingress": 5.0,
        "postgres": 5.0,
    }


def test_ratios_against_the_floor_of_the_same_client_count():
    result = {
        "floor": [
            {"concurrency": 1, "throughput_rps": 50.0, "latency_ms": {"p95": 20.0}},
            {"concurrency": 8, "throughput_rps": 100.0, "latency_ms": {"p95": 100.0}},
        ],
        "search": [
            {"variant": "exact_queries", "concurrency": 8, "throughput_rps": 75.0,
             "latency_ms": {"p95": 150.0}},
        ],
    }  # fmt: skip
    assert ratios(result) == {
        "exact_queries_c8_rps_vs_default_floor": 0.75,
        "exact_queries_c8_p95_vs_default_floor": 1.5,
    }
