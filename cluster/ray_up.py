"""`ray up` cluster files (GCP) built from a hardware profile.

Every node runs the same container image as the KubeRay manifests. Node-type `resources`
reach `ray start` through the autoscaler (RAY_OVERRIDE_RESOURCES), so CPU, memory and
object store match what the placement check packed. Store addresses come from
`~/memserve.env`, copied from cluster/memserve.env (not committed; start from memserve.env.example).
"""

from __future__ import annotations

from cluster.kuberay_manifests import DEFAULT_IMAGE, gke_accelerator
from serve_app.profiles import HardwareProfile, NodeSpec
from serve_app.serving_env import cluster_env

# A Deep Learning VM image: NVIDIA driver, Docker and the NVIDIA container toolkit.
BOOT_IMAGE = (
    "projects/deeplearning-platform-release/global/images/family/"
    "common-cu128-ubuntu-2204-nvidia-570"
)
ENV_FILE = "~/memserve.env"
_LOAD_ENV = f"set -a; . {ENV_FILE}; set +a; ulimit -n 65536;"


def _serving(nodes: list[NodeSpec]) -> str:
    """The Serve fast-path exports for `ray start`; one command serves every node listed, so
    it is sized for the smallest of them."""
    cpus = min(int(n.container_cpus if n.container_cpus is not None else n.cpus) for n in nodes)
    return " ".join(f"{k}={v}" for k, v in sorted(cluster_env(max(cpus, 1)).items()))


def _node_type(node: NodeSpec) -> dict:
    resources: dict[str, int] = {
        "CPU": int(node.cpus),
        "memory": node.ray_memory_bytes(),
        "object_store_memory": node.object_store,
    }
    if node.gpus:
        resources["GPU"] = node.gpus
    if not node.machine_type:
        raise ValueError(f"node {node.name} has no machine_type")
    node_config: dict = {
        "machineType": node.machine_type,
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "type": "PERSISTENT",
                "initializeParams": {"diskSizeGb": 200, "sourceImage": BOOT_IMAGE},
            }
        ],
        "metadata": {"items": [{"key": "install-nvidia-driver", "value": "True"}]},
    }
    if node.gpus:
        # GPU VMs cannot live-migrate.
        node_config["scheduling"] = [{"onHostMaintenance": "TERMINATE"}]
        if node.machine_type.startswith("n1-"):
            # A2 and G2 machine types come with their GPUs; N1 takes them as accelerators.
            node_config["guestAccelerators"] = [
                {"acceleratorType": gke_accelerator(node), "acceleratorCount": node.gpus}
            ]
    out: dict = {"resources": resources, "node_config": node_config}
    if not node.head:
        out["min_workers"] = node.count
        out["max_workers"] = node.count
    return out


def ray_up_config(profile: HardwareProfile, image: str = DEFAULT_IMAGE) -> dict:
    head = next(n for n in profile.nodes if n.head)
    workers = [n for n in profile.nodes if not n.head]
    return {
        "cluster_name": f"memserve-{profile.name}",
        "max_workers": sum(n.count for n in workers),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": {
            "type": "gcp",
            "region": "us-central1",
            "availability_zone": "us-central1-a",
            "project_id": "YOUR_GCP_PROJECT",
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {
            "image": image,
            "container_name": "memserve_ray",
            "pull_before_run": True,
            # Ray sizes --shm-size from the node's memory when it is not given.
            "run_options": ["--ulimit nofile=65536:65536"],
        },
        "available_node_types": {n.name: _node_type(n) for n in profile.nodes},
        "head_node_type": head.name,
        "file_mounts": {ENV_FILE: "cluster/memserve.env"},
        "head_setup_commands": ["pip install google-api-python-client"],
        "setup_commands": [],
        "head_start_ray_commands": [
            "ray stop",
            f"{_LOAD_ENV} {_serving([head])} ray start --head --port=6379"
            " --object-manager-port=8076 --autoscaling-config=~/ray_bootstrap_config.yaml"
            " --dashboard-host=0.0.0.0",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            f"{_LOAD_ENV} {_serving(workers)} ray start --address=$RAY_HEAD_IP:6379"
            " --object-manager-port=8076",
        ],
    }
