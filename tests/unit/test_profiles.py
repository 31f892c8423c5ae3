"""Hardware profiles: the invariants every profile must keep, and the validators that
refuse inconsistent ones."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.profiles import (
    LOCAL,
    ONE_LOOP_ENV,
    PROFILES,
    T4,
    Autoscaling,
    BatchedGroup,
    GroupResources,
    HardwareProfile,
    LLMGroup,
    NodeSpec,
    get_profile,
)

GPU_PROFILES = [p for p in PROFILES.values() if p.gpu_nodes]


def test_required_profiles_exist():
    assert {"local", "t4", "l4", "a100", "a100x8"} <= set(PROFILES)
    assert get_profile("l4").name == "l4"
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("tpu")


def test_local_is_cpu_only_with_embedded_stores_and_no_llm():
    assert LOCAL.embedded_stores
    assert not LOCAL.gpu_nodes
    assert LOCAL.llm.backend == "none"
    assert all(g.num_gpus == 0 for g in LOCAL.groups().values())
    assert list(LOCAL.groups()) == ["Ingress", "Embedder", "MemoryIndex", "IngestWorker"]
    assert LOCAL.http_host == "127.0.0.1"


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_gpu_profiles_use_external_stores_and_several_retrieval_replicas(profile):
    assert not profile.embedded_stores
    assert profile.memory_index.max_replicas >= 2
    replicas = (
        profile.memory_index.autoscaling.min_replicas if profile.memory_index.autoscaling else 2
    )
    assert replicas >= 2


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_gpu_profiles_host_the_llm_and_compressor_on_gpu(profile):
    groups = profile.groups()
    assert {"Compressor", "LLM"} <= set(groups)
    assert profile.llm.backend == "vllm"
    assert profile.llm.model.startswith("Qwen/Qwen2.5-7B-Instruct")
    assert profile.llm.accelerator_type == profile.gpu_nodes[0].gpu_type
    for name in ("Embedder", "Compressor"):
        assert groups[name].num_gpus > 0 and groups[name].device == "cuda"
        assert groups[name].gpu_memory_bytes  # an estimate the placement check uses


def test_t4_runs_the_llm_in_half_precision_quantized():
    assert T4.llm.dtype == "half"
    assert T4.llm.quantization == "awq"
    assert "AWQ" in T4.llm.model


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_llm_memory_utilization_within_its_gpu_share(profile):
    llm = profile.llm
    assert llm.gpu_memory_utilization <= llm.num_gpus
    assert llm.max_model_len <= 32768  # Qwen2.5's native context


SINGLE_GPU = [p for p in GPU_PROFILES if [n.gpus for n in p.gpu_nodes] == [1]]


@pytest.mark.parametrize("profile", SINGLE_GPU, ids=lambda p: p.name)
def test_gpu_shares_on_single_gpu_profiles_sum_to_at_most_one(profile):
    # Multi-GPU packing is what cluster/placement.py checks.
    total = sum(
        g.gpus_per_replica if isinstance(g, LLMGroup) else g.num_gpus * g.max_replicas
        for g in profile.groups().values()
    )
    assert total <= 1 + 1e-9


def test_deployment_options_shape():
    opts = T4.embedder.deployment_options()
    assert opts["ray_actor_options"] == {
        "num_cpus": 1,
        "num_gpus": 0.1,
        "memory": 5 * 1024**3 // 2,
        "runtime_env": {"env_vars": ONE_LOOP_ENV},
    }
    # Only the replica's process gets the one-loop switch; the LLM group's options are Ray
    # Serve LLM's.
    separate = T4.embedder.model_copy(update={"one_loop": False})
    assert "runtime_env" not in separate.ray_actor_options()
    assert not PROFILES["l4"].llm.one_loop
    assert opts["num_replicas"] == 1 and "autoscaling_config" not in opts
    assert T4.embedder.user_config() == {"max_batch_size": 128, "batch_wait_timeout_s": 0.005}
    scaled = PROFILES["a100x8"].memory_index.deployment_options()
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 4,
        "max_replicas": 16,
        "target_ongoing_requests": 16,
    }
    # No per-request access log line on any group unless a profile asks for it.
    for profile in PROFILES.values():
        for group in (profile.ingress, profile.memory_index, profile.embedder, profile.worker):
            assert group.deployment_options()["logging_config"] == {"enable_access_log": False}
    debug = T4.ingress.model_copy(update={"access_log": True})
    assert debug.deployment_options()["logging_config"] == {"enable_access_log": True}


def test_llm_gpu_lives_in_the_placement_group_not_the_replica_actor():
    opts = T4.llm.deployment_options()
    assert "num_gpus" not in opts["ray_actor_options"]
    assert T4.llm.placement_group_config() == {
        "bundle_per_worker": {"GPU": 0.8},
        "strategy": "PACK",
    }
    kwargs = T4.llm.engine_kwargs()
    assert kwargs["dtype"] == "half" and kwargs["quantization"] == "awq"
    assert kwargs["gpu_memory_utilization"] == 0.75
    tp = LLMGroup(backend="vllm", model="m", num_gpus=1, tensor_parallel_size=4)
    assert tp.placement_group_config()["strategy"] == "STRICT_PACK"
    assert tp.gpus_per_replica == 4


def test_llm_validator_rejects_inconsistent_gpu_settings():
    with pytest.raises(ValidationError, match="exceeds the GPU share"):
        LLMGroup(backend="vllm", model="m", num_gpus=0.5, gpu_memory_utilization=0.9)
    with pytest.raises(ValidationError, match="whole GPUs"):
        LLMGroup(
            backend="vllm",
            model="m",
            num_gpus=0.5,
            tensor_parallel_size=2,
            gpu_memory_utilization=0.4,
        )
    with pytest.raises(ValidationError, match="needs a model"):
        LLMGroup(backend="vllm", num_gpus=1)
    with pytest.raises(ValidationError, match="fraction or exactly 1"):
        LLMGroup(backend="vllm", model="m", num_gpus=2)


def test_profile_validator_rejects_bf16_on_t4_and_shared_embedded_stores():
    with pytest.raises(ValidationError, match="bfloat16"):
        T4.model_validate({**T4.model_dump(), "llm": {**T4.llm.model_dump(), "dtype": "bfloat16"}})
    with pytest.raises(ValidationError, match="one MemoryIndex replica"):
        HardwareProfile.model_validate({**LOCAL.model_dump(), "memory_index": {"num_replicas": 2}})


def test_group_validators():
    with pytest.raises(ValidationError, match="does not match"):
        BatchedGroup(num_gpus=0.1, device="cpu")
    with pytest.raises(ValidationError, match="min_replicas > max_replicas"):
        Autoscaling(min_replicas=3, max_replicas=2, target_ongoing_requests=1)
    with pytest.raises(ValidationError, match="gpu_type"):
        NodeSpec(name="g", cpus=4, gpus=1, memory_bytes=1)
    assert (
        GroupResources(
            autoscaling=Autoscaling(min_replicas=1, max_replicas=5, target_ongoing_requests=2)
        ).max_replicas
        == 5
    )


def test_node_memory_accounting():
    gpu = T4.gpu_nodes[0]
    assert gpu.ray_memory_bytes() == gpu.memory_bytes - gpu.object_store - gpu.system_reserved_bytes
    # Ray's own default object store share applies when none is set.
    assert LOCAL.nodes[0].object_store == int(0.3 * LOCAL.nodes[0].memory_bytes)
