"""The `vllm` backend's configuration for each GPU profile, built and validated without a GPU.

The pure mapping is tested everywhere. The tests marked `ray_llm` also validate it against the
real `ray.serve.llm.LLMConfig` and the vLLM it pins; they run where ray[llm] is installed
(`bash tests/real_engine/gpu_config.sh` sets up `.venv-gpu` for that) and skip elsewhere.
"""

from __future__ import annotations

import importlib.util

import pytest

from serve_app.llm.vllm_config import (
    DEFAULT_VLLM_MODEL,
    accelerator_type_of,
    llm_config_kwargs,
    llm_config_kwargs_for_profile,
    resolve_dtype,
)
from serve_app.profiles import PROFILES, LLMGroup

GPU_PROFILES = [p for p in PROFILES.values() if p.llm.backend == "vllm"]
HAVE_RAY_LLM = importlib.util.find_spec("vllm") is not None
ray_llm = pytest.mark.skipif(not HAVE_RAY_LLM, reason="ray[llm] not installed (gpu_config.sh)")


def test_there_are_gpu_profiles_to_check():
    assert GPU_PROFILES


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_profile_maps_to_llm_config_kwargs(profile):
    g = profile.llm
    kw = llm_config_kwargs_for_profile(profile)
    assert kw["model_loading_config"] == {"model_id": g.model, "model_source": g.model}
    eng = kw["engine_kwargs"]
    assert eng["tensor_parallel_size"] == g.tensor_parallel_size
    assert eng["gpu_memory_utilization"] == g.gpu_memory_utilization
    assert eng["max_model_len"] == g.max_model_len
    assert eng.get("quantization") == g.quantization
    bundles = kw["placement_group_config"]["bundles"]
    assert bundles == [{"GPU": g.num_gpus}] * g.tensor_parallel_size
    actor = kw["deployment_config"]["ray_actor_options"]
    assert "num_gpus" not in actor  # the GPU is in the engine's bundle only
    assert actor["num_cpus"] == g.num_cpus
    assert kw.get("accelerator_type") == accelerator_type_of(profile)
    if accelerator_type_of(profile) == "T4":
        assert eng["dtype"] == "half"


def test_fractional_t4_group():
    g = LLMGroup(
        backend="vllm",
        model="Qwen/Qwen2.5-7B-Instruct-AWQ",
        quantization="awq",
        dtype="half",
        num_cpus=1,
        num_gpus=0.5,
        memory_bytes=4 << 30,
        gpu_memory_utilization=0.45,
        max_ongoing_requests=8,
        autoscaling={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
    )
    kw = llm_config_kwargs(g, accelerator_type="T4")
    assert kw["accelerator_type"] == "T4"
    assert kw["engine_kwargs"] == {
        "dtype": "half",
        "gpu_memory_utilization": 0.45,
        "tensor_parallel_size": 1,
        "max_model_len": 8192,
        "max_num_seqs": 64,
        "quantization": "awq",
    }
    assert kw["placement_group_config"] == {"bundles": [{"GPU": 0.5}]}
    assert kw["deployment_config"] == {
        "ray_actor_options": {"num_cpus": 1, "memory": 4 << 30},
        "max_ongoing_requests": 8,
        "max_queued_requests": -1,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
    }


def test_tensor_parallel_group_gets_one_bundle_per_rank():
    g = LLMGroup(backend="vllm", model="m", num_gpus=1, tensor_parallel_size=2, num_replicas=3)
    kw = llm_config_kwargs(g, accelerator_type="L4")
    assert kw["placement_group_config"] == {"bundles": [{"GPU": 1}, {"GPU": 1}]}
    assert kw["deployment_config"]["num_replicas"] == 3
    assert kw["engine_kwargs"]["dtype"] == "auto"


def test_dtype_rules_and_non_vllm_groups():
    assert resolve_dtype("auto", "T4") == "half"
    assert resolve_dtype("bfloat16", "A100") == "bfloat16"
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_dtype("bfloat16", "T4")
    with pytest.raises(ValueError, match="not 'vllm'"):
        llm_config_kwargs(LLMGroup(backend="openai", model="x"))
    assert DEFAULT_VLLM_MODEL == "Qwen/Qwen2.5-7B-Instruct"


# ---- against the real ray[llm] + vLLM (only where installed) ----


@ray_llm
def test_invalid_engine_kwargs_are_caught_without_a_gpu():
    from ray.serve.llm import LLMConfig

    kw = llm_config_kwargs(LLMGroup(backend="vllm", model="m", num_gpus=1))
    kw["engine_kwargs"]["no_such_vllm_option"] = 1
    with pytest.raises(ValueError, match="Unknown engine argument"):
        LLMConfig(**kw).get_engine_config()
