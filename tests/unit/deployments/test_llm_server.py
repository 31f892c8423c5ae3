"""The `vllm` backend's Serve side against the real ray[llm] and the vLLM it pins.

Runs where ray[llm] is installed (`bash tests/real_engine/gpu_config.sh` sets up `.venv-gpu`
for that) and skips elsewhere.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from deployments.llm_server import ServeLLMBackend
from serve_app.profiles import PROFILES

GPU_PROFILES = [p for p in PROFILES.values() if p.llm.backend == "vllm"]
HAVE_RAY_LLM = importlib.util.find_spec("vllm") is not None
ray_llm = pytest.mark.skipif(not HAVE_RAY_LLM, reason="ray[llm] not installed (gpu_config.sh)")


@ray_llm
@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_profile_builds_a_valid_ray_serve_llm_config(profile, monkeypatch):
    import huggingface_hub.constants
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    from deployments.llm_server import build_llm_config

    cfg = build_llm_config(profile)
    g = profile.llm
    engine = cfg.get_engine_config()  # rejects engine kwargs vLLM does not know
    init = engine.get_initialization_kwargs()
    assert init["model"] == g.model and init["served_model_name"] == [g.model]
    assert init["distributed_executor_backend"] == "ray"
    # Offline, EngineArgs resolves the model id to a local snapshot; there are no weights here,
    # and none are needed to check the arguments.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    args = AsyncEngineArgs(**init)
    assert args.tensor_parallel_size == g.tensor_parallel_size
    if g.quantization:
        assert g.quantization in QUANTIZATION_METHODS
    bundles = engine.placement_bundles
    assert len(bundles) == g.tensor_parallel_size
    assert all(b["GPU"] == g.num_gpus for b in bundles)
    env = engine.get_runtime_env_with_local_env_vars()["env_vars"]
    if g.num_gpus < 1:
        assert env["VLLM_RAY_PER_WORKER_GPUS"] == str(g.num_gpus)
    else:
        assert "VLLM_RAY_PER_WORKER_GPUS" not in env
    if cfg.accelerator_type:
        assert all(f"accelerator_type:{cfg.accelerator_type}" in b for b in bundles)


@ray_llm
async def test_serve_backend_reads_the_single_response_from_the_chat_generator():
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, ChatCompletionResponse

    response = ChatCompletionResponse(
        model="m",
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": '{"a": 1}'},
                "finish_reason": "stop",
            }
        ],
        usage={"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
    )

    class FakeHandle:
        """Stands in for the LLMServer deployment handle (the engine double)."""

        def __init__(self):
            self.requests: list = []
            self.stream = None
            self.chat = SimpleNamespace(remote=self._remote)

        def options(self, *, stream):
            self.stream = stream
            return self

        def _remote(self, request):
            self.requests.append(request)

            async def gen():
                yield response

            return gen()

    handle = FakeHandle()
    backend = ServeLLMBackend(handle, model="m")
    reply = await backend.chat_json(
        [{"role": "user", "content": "x"}],
        {"type": "object"},
        max_tokens=8,
        temperature=0.0,
        timeout_s=5,
    )
    assert handle.stream is True
    assert isinstance(handle.requests[0], ChatCompletionRequest)
    assert handle.requests[0].response_format is not None
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ('{"a": 1}', 7, 4)
