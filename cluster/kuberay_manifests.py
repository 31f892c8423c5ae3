"""KubeRay manifests built from a hardware profile: a RayService per GPU profile, a RayJob
template for offline batch jobs, and the Secret they read the store addresses from.

PostgreSQL and Qdrant stay outside the Ray cluster; every Ray pod gets their addresses as
MEMSERVE_* environment variables from the Secret `memserve-stores` (see
cluster/kuberay/secrets.example.yaml). Node pools are GKE's; on another Kubernetes change
`gpu_node_selector` (NVIDIA's feature discovery labels `nvidia.com/gpu.product`).
"""

from __future__ import annotations

from serve_app.profiles import GiB, HardwareProfile, NodeSpec
from serve_app.serving_env import cluster_env

RAY_VERSION = "2.60.0"
# Build with cluster/Dockerfile and push where the cluster can pull it.
DEFAULT_IMAGE = "memserve:0.1.0-gpu"
STORES_SECRET = "memserve-stores"
HF_SECRET = "memserve-hf"
SERVE_PORT = 8000


def gke_accelerator(node: NodeSpec) -> str:
    """GKE's `cloud.google.com/gke-accelerator` value (also GCP's accelerator type)."""
    if node.gpu_type == "A100":
        big = (node.gpu_memory_bytes or 0) > 41 * GiB
        return "nvidia-a100-80gb" if big else "nvidia-tesla-a100"
    names = {"T4": "nvidia-tesla-t4", "L4": "nvidia-l4"}
    if node.gpu_type not in names:
        raise ValueError(f"no GKE accelerator name for {node.gpu_type!r}")
    return names[node.gpu_type]


def gpu_node_selector(node: NodeSpec) -> dict[str, str]:
    return {"cloud.google.com/gke-accelerator": gke_accelerator(node)}


def _quantity(n_bytes: int) -> str:
    if n_bytes % GiB == 0:
        return f"{n_bytes // GiB}Gi"
    return f"{n_bytes // (1024 * 1024)}Mi"


def _cpu(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{int(value * 1000)}m"


def ray_start_params(node: NodeSpec) -> dict[str, str]:
    params = {
        "num-cpus": _cpu(node.cpus) if node.cpus else "0",
        "memory": str(node.ray_memory_bytes()),
        "object-store-memory": str(node.object_store),
    }
    if node.head:
        params["dashboard-host"] = "0.0.0.0"
    return params


def _env_from() -> list[dict]:
    return [
        {"secretRef": {"name": STORES_SECRET}},
        # Hugging Face token for gated models; the public Qwen and LLMLingua need none.
        {"secretRef": {"name": HF_SECRET, "optional": True}},
    ]


def _pod_template(node: NodeSpec, image: str, container: str) -> dict:
    cpus = node.container_cpus if node.container_cpus is not None else node.cpus
    resources: dict = {
        "requests": {"cpu": _cpu(cpus), "memory": _quantity(node.memory_bytes)},
        "limits": {"cpu": _cpu(cpus), "memory": _quantity(node.memory_bytes)},
    }
    if node.gpus:
        resources["limits"]["nvidia.com/gpu"] = str(node.gpus)
    ports = [{"containerPort": SERVE_PORT, "name": "serve"}]
    if node.head:
        ports = [
            {"containerPort": 6379, "name": "gcs"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            *ports,
        ]
    spec: dict = {
        "containers": [
            {
                "name": container,
                "image": image,
                "env": [
                    {"name": "MEMSERVE_DATA_DIR", "value": "/tmp/memserve"},
                    *(
                        {"name": k, "value": v}
                        for k, v in sorted(cluster_env(max(int(cpus), 1)).items())
                    ),
                ],
                "envFrom": _env_from(),
                "ports": ports,
                "resources": resources,
                # The object store lives in /dev/shm; the default 64 MiB would spill to disk.
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }
        ],
        "volumes": [
            {
                "name": "dshm",
                "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(node.object_store)},
            }
        ],
    }
    if node.gpus:
        spec["nodeSelector"] = gpu_node_selector(node)
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"metadata": {"labels": {"app.kubernetes.io/name": "memserve"}}, "spec": spec}


def ray_cluster_spec(profile: HardwareProfile, image: str) -> dict:
    heads = [n for n in profile.nodes if n.head]
    if len(heads) != 1:
        raise ValueError(f"profile {profile.name} needs exactly one head node")
    head = heads[0]
    workers = [n for n in profile.nodes if not n.head]
    autoscaling = any(g.autoscaling for g in profile.groups().values())
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": autoscaling,
        "headGroupSpec": {
            "rayStartParams": ray_start_params(head),
            "template": _pod_template(head, image, "ray-head"),
        },
        "workerGroupSpecs": [
            {
                "groupName": n.name,
                "replicas": n.count,
                "minReplicas": n.count,
                "maxReplicas": n.count,
                "rayStartParams": ray_start_params(n),
                "template": _pod_template(n, image, "ray-worker"),
            }
            for n in workers
        ],
    }


def _labels(profile: HardwareProfile) -> dict[str, str]:
    return {"app.kubernetes.io/name": "memserve", "memserve.io/profile": profile.name}


def ray_service(profile: HardwareProfile, serve_config_yaml: str, image: str) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": f"memserve-{profile.name}", "labels": _labels(profile)},
        "spec": {
            "serveConfigV2": serve_config_yaml,
            "rayClusterConfig": ray_cluster_spec(profile, image),
        },
    }


def ray_job_template(profile: HardwareProfile, image: str) -> dict:
    """A RayJob on a fresh cluster of `profile`'s shape; `${JOB_NAME}` is filled by envsubst."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "memserve-job-${JOB_NAME}", "labels": _labels(profile)},
        "spec": {
            "entrypoint": "python -m jobs.${JOB_NAME}",
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": 86400,
            "backoffLimit": 0,
            "rayClusterSpec": ray_cluster_spec(profile, image),
        },
    }


def stores_secret_example() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STORES_SECRET},
        "type": "Opaque",
        "stringData": {
            "MEMSERVE_PG_DSN": "postgresql://memserve:CHANGE_ME@postgres.example.internal:5432/memserve",
            "MEMSERVE_QDRANT_URL": "http://qdrant.example.internal:6333",
            "MEMSERVE_QDRANT_API_KEY": "CHANGE_ME",
        },
    }
