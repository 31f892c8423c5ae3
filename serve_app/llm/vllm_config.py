"""The `vllm` backend's Ray Serve LLM configuration, computed from a hardware profile.

Pure: returns the keyword arguments of `ray.serve.llm.LLMConfig` as plain data, so it is
tested without ray[llm]; `deployments/llm.py` turns them into the real `LLMConfig`, and
`tests/real_engine/gpu_config.sh` validates every GPU profile against ray[llm] + vLLM.
"""

from __future__ import annotations

from serve_app.profiles import HardwareProfile, LLMGroup

DEFAULT_VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct"
DEPLOYMENT_NAME = "LLM"

# GPUs without bfloat16 (compute capability < 8.0): vLLM must run them in float16.
NO_BF16_GPUS = frozenset({"T4", "V100", "P100", "P4", "K80", "M60"})


def accelerator_type_of(profile: HardwareProfile) -> str | None:
    """The GPU type of the profile's GPU nodes (one type per profile), or None."""
    types = {n.gpu_type for n in profile.nodes if n.gpus and n.gpu_type}
    if len(types) > 1:
        raise ValueError(f"profile {profile.name!r} mixes GPU types {sorted(types)}")
    return types.pop() if types else None


def resolve_dtype(dtype: str, accelerator_type: str | None) -> str:
    if accelerator_type in NO_BF16_GPUS:
        if dtype in ("bfloat16", "bf16"):
            raise ValueError(f"{accelerator_type} has no bfloat16: use dtype 'half'")
        return "half"
    return dtype


def llm_config_kwargs(group: LLMGroup, *, accelerator_type: str | None = None) -> dict:
    """`LLMConfig(**kwargs)` for an LLM group whose backend is `vllm`."""
    if group.backend != "vllm":
        raise ValueError(f"LLM backend is {group.backend!r}, not 'vllm'")
    if group.num_gpus <= 0:
        raise ValueError("the vllm backend needs num_gpus > 0 in the profile's llm group")
    tp = group.tensor_parallel_size
    if tp > 1 and group.num_gpus != tp:
        raise ValueError(f"tensor_parallel_size={tp} needs num_gpus={tp} whole GPUs")
    if tp == 1 and group.num_gpus > 1:
        raise ValueError("num_gpus > 1 needs tensor_parallel_size = num_gpus")
    if group.num_gpus < 1 and group.gpu_memory_utilization > group.num_gpus:
        # vLLM sizes its KV cache from this fraction of the *whole* GPU: replicas sharing a GPU
        # would together reserve more memory than exists.
        raise ValueError(
            f"gpu_memory_utilization={group.gpu_memory_utilization} exceeds this replica's "
            f"GPU share num_gpus={group.num_gpus}"
        )
    model = group.model or DEFAULT_VLLM_MODEL
    engine_kwargs: dict = {
        "dtype": resolve_dtype(group.dtype, accelerator_type),
        "gpu_memory_utilization": group.gpu_memory_utilization,
        "tensor_parallel_size": tp,
        "max_model_len": group.max_model_len,
        "max_num_seqs": group.max_num_seqs,
    }
    deployment_config: dict = {
        "max_ongoing_requests": group.max_ongoing_requests,
        "max_queued_requests": group.max_queued_requests,
        "ray_actor_options": {"num_cpus": group.num_cpus},
    }
    if group.autoscaling is not None:
        deployment_config["autoscaling_config"] = group.autoscaling.model_dump()
    else:
        deployment_config["num_replicas"] = group.num_replicas
    # The GPU goes to the engine's placement-group bundle, not to the replica actor; a share
    # below 1 is what makes Ray Serve LLM set VLLM_RAY_PER_WORKER_GPUS for a fractional GPU.
    gpus_per_worker = group.num_gpus / tp
    kwargs: dict = {
        "model_loading_config": {"model_id": model, "model_source": model},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment_config,
        "placement_group_config": {"bundles": [{"GPU": gpus_per_worker}] * tp},
    }
    if accelerator_type:
        kwargs["accelerator_type"] = accelerator_type
    return kwargs


def llm_config_kwargs_for_profile(profile: HardwareProfile) -> dict:
    return llm_config_kwargs(profile.llm, accelerator_type=accelerator_type_of(profile))
