"""The `vllm` backend's Ray Serve LLM configuration, computed from a hardware profile.

Pure: returns the keyword arguments of `ray.serve.llm.LLMConfig` as plain data, so it is
tested without ray[llm]; `deployments/llm_server.py` turns them into the real `LLMConfig`, and
`tests/real_engine/gpu_config.sh` validates every GPU profile against ray[llm] and its vLLM.
The GPU share rules themselves (fraction or whole GPUs per rank, memory fraction within the
share, half precision on T4) are validated by `serve_app.profiles.LLMGroup`/`HardwareProfile`.
"""

from __future__ import annotations

from serve_app.profiles import HardwareProfile, LLMGroup

DEFAULT_VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct"
DEPLOYMENT_NAME = "LLM"

# GPUs without bfloat16 (compute capability < 8.0): vLLM must run them in float16.
NO_BF16_GPUS = frozenset({"T4", "V100", "P100", "P4", "K80", "M60"})


def accelerator_type_of(profile: HardwareProfile) -> str | None:
    """The LLM group's accelerator type, else the one GPU type of the profile's nodes."""
    if profile.llm.accelerator_type:
        return profile.llm.accelerator_type
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
    accelerator_type = group.accelerator_type or accelerator_type
    model = group.model or DEFAULT_VLLM_MODEL
    tp = group.tensor_parallel_size
    engine_kwargs: dict = {
        "dtype": resolve_dtype(group.dtype, accelerator_type),
        "gpu_memory_utilization": group.gpu_memory_utilization,
        "tensor_parallel_size": tp,
        "max_model_len": group.max_model_len,
        "max_num_seqs": group.max_num_seqs,
    }
    if group.quantization:
        engine_kwargs["quantization"] = group.quantization
    # The replica actor gets CPU and memory only: the GPU is each engine worker's placement
    # group bundle, and a share below 1 there is what makes Ray Serve LLM set
    # VLLM_RAY_PER_WORKER_GPUS so that vLLM accepts a fractional GPU.
    actor_options: dict = {"num_cpus": group.num_cpus}
    if group.memory_bytes:
        actor_options["memory"] = group.memory_bytes
    kwargs: dict = {
        "model_loading_config": {"model_id": model, "model_source": model},
        "engine_kwargs": engine_kwargs,
        "deployment_config": {"ray_actor_options": actor_options, **group.scaling_options()},
        "placement_group_config": {"bundles": [{"GPU": group.num_gpus} for _ in range(tp)]},
    }
    if accelerator_type:
        kwargs["accelerator_type"] = accelerator_type
    return kwargs


def llm_config_kwargs_for_profile(profile: HardwareProfile) -> dict:
    return llm_config_kwargs(profile.llm, accelerator_type=accelerator_type_of(profile))
