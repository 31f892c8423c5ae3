"""cluster/: KubeRay manifests validate against the pinned CRD schemas, `ray up` files
against Ray's cluster schema, and both match the profiles they come from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.kuberay_manifests import HF_SECRET, STORES_SECRET
from cluster.schemas import build
from configs import generate
from serve_app.profiles import PROFILES

ROOT = Path(generate.__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "cluster/schemas/kuberay-v1.schema.json").read_text())
KUBE = sorted((ROOT / "cluster/kuberay").glob("*.yaml"))
SERVICES = sorted((ROOT / "cluster/kuberay").glob("rayservice-*.yaml"))
RAY_UP = sorted((ROOT / "cluster/ray-up").glob("*.yaml"))
GPU_PROFILES = [p.name for p in PROFILES.values() if p.gpu_nodes]
DEF_FOR_KIND = {
    "RayService": "RayService",
    "RayJob": "RayJob",
    "Secret": "io.k8s.api.core.v1.Secret",
}


def validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"})


def errors(manifest: dict) -> list[str]:
    return [e.message for e in validator(DEF_FOR_KIND[manifest["kind"]]).iter_errors(manifest)]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_pinned_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert {"RayService", "RayJob", "io.k8s.api.core.v1.PodTemplateSpec"} <= SCHEMA["$defs"].keys()


def test_manifest_set():
    assert [p.stem.removeprefix("rayservice-") for p in SERVICES] == sorted(GPU_PROFILES)
    assert {p.name for p in KUBE} >= {"rayjob-template.yaml", "secrets.example.yaml"}
    assert [p.stem for p in RAY_UP] == sorted(GPU_PROFILES)


@pytest.mark.parametrize("path", KUBE, ids=lambda p: p.name)
def test_manifest_validates_against_crd_schema(path):
    assert errors(load(path)) == []


def test_schema_rejects_broken_manifests():
    good = load(ROOT / "cluster/kuberay/rayservice-t4.yaml")
    cases = []
    typo = copy.deepcopy(good)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replica"] = 1
    cases.append(typo)
    no_template = copy.deepcopy(good)
    del no_template["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    cases.append(no_template)
    bad_container = copy.deepcopy(good)
    bad_container["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "resourcez"
    ] = {}
    cases.append(bad_container)
    bad_kind = copy.deepcopy(good)
    bad_kind["apiVersion"] = "ray.io/v1alpha1"
    cases.append(bad_kind)
    int_params = copy.deepcopy(good)
    int_params["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    cases.append(int_params)
    for case in cases:
        assert errors(case), case


def _cluster(manifest: dict) -> dict:
    spec = manifest["spec"]
    return spec.get("rayClusterConfig") or spec["rayClusterSpec"]


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_rayservice_matches_profile_and_serve_config(name):
    manifest = load(ROOT / f"cluster/kuberay/rayservice-{name}.yaml")
    serve = load(ROOT / f"configs/{name}.yaml")
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve
    cluster = _cluster(manifest)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    profile = PROFILES[name]
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    (group,) = gpu_groups
    node = profile.gpu_nodes[0]
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(node.gpus)
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"].startswith("nvidia-")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert group["rayStartParams"]["num-cpus"] == str(int(node.cpus))
    assert int(group["rayStartParams"]["memory"]) == node.ray_memory_bytes()
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == node.count


@pytest.mark.parametrize(
    "path", [p for p in KUBE if p.name != "secrets.example.yaml"], ids=lambda p: p.name
)
def test_stores_come_from_secrets_not_from_the_cluster(path):
    cluster = _cluster(load(path))
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert [e["secretRef"]["name"] for e in container["envFrom"]] == [
            STORES_SECRET,
            HF_SECRET,
        ]
        assert container["image"].startswith("memserve:")


def test_secret_example_names_the_store_variables():
    secret = load(ROOT / "cluster/kuberay/secrets.example.yaml")
    assert secret["metadata"]["name"] == STORES_SECRET
    assert set(secret["stringData"]) == {
        "MEMSERVE_PG_DSN",
        "MEMSERVE_QDRANT_URL",
        "MEMSERVE_QDRANT_API_KEY",
    }


def test_rayjob_template_runs_a_jobs_module():
    job = load(ROOT / "cluster/kuberay/rayjob-template.yaml")
    assert job["spec"]["entrypoint"] == "python -m jobs.${JOB_NAME}"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    filled = yaml.safe_load(
        (ROOT / "cluster/kuberay/rayjob-template.yaml")
        .read_text()
        .replace("${JOB_NAME}", "reindex")
    )
    assert errors(filled) == []
    assert filled["metadata"]["name"] == "memserve-job-reindex"


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: p.name)
def test_ray_up_config_validates_and_matches_profile(path):
    raw = load(path)
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)  # Ray's own check: ray-schema.json and node types
    profile = PROFILES[path.stem]
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"]["CPU"] == 0
    for node in profile.nodes:
        if node.head:
            continue
        resources = types[node.name]["resources"]
        assert resources["GPU" if node.gpus else "CPU"] == (node.gpus or int(node.cpus))
        assert resources["memory"] == node.ray_memory_bytes()
        assert types[node.name]["min_workers"] == node.count


def test_ray_up_rejects_a_broken_file():
    raw = load(RAY_UP[0])
    raw["available_node_types"]["gpu"]["resources"]["CPU"] = 1.5  # must be an integer
    with pytest.raises(Exception, match="(?i)valid|schema|1.5"):
        validate_config(prepare_config(raw))


def test_schema_builder_keeps_the_definition_closure():
    # The committed file's k8s definitions are closed under $ref; rebuilding from the same
    # source reproduces it (when kubernetes-validate is installed).
    defs = SCHEMA["$defs"]
    assert {r for d in defs.values() for r in build._refs(d)} <= defs.keys()
    try:
        source = build.k8s_definitions_path()
    except ImportError:
        return
    assert build.build(source) == SCHEMA
