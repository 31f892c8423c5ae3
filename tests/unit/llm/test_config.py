from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.llm.config import (
    BackendSpec,
    LLMSettings,
    build_resilient_llm,
    make_backend,
    with_profile_backend,
)
from serve_app.llm.openai_backend import OpenAIBackend
from serve_app.llm.scripted import ScriptedBackend
from serve_app.profiles import LLMGroup

ENDPOINT = {"kind": "openai", "base_url": "http://127.0.0.1:28100/v1", "model": "qwen"}


def test_settings_from_json_like_an_env_variable():
    s = LLMSettings.model_validate_json(
        '{"backends": [{"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "a",'
        ' "api_key": "sk-secret", "max_concurrency": 2}], "backoff_s": [1, 2]}'
    )
    assert s.enabled and s.backends[0].label == "openai"
    assert "sk-secret" not in repr(s)
    assert s.policy().backoff_s == (1.0, 2.0)
    assert s.limits().max_facts is None


def test_no_backends_means_extractive_mode():
    assert build_resilient_llm(LLMSettings()) is None


def test_backend_names_must_be_unique():
    with pytest.raises(ValidationError):
        LLMSettings(backends=[ENDPOINT, ENDPOINT])


def test_build_openai_chain_with_concurrency_limits():
    s = LLMSettings(
        backends=[{**ENDPOINT, "name": "local", "max_concurrency": 3}, {**ENDPOINT, "name": "b"}]
    )
    llm = build_resilient_llm(s)
    assert [b.name for b in llm.backends] == ["local", "b"]
    assert all(isinstance(b, OpenAIBackend) for b in llm.backends)
    assert [st["max_concurrency"] for st in llm.status()] == [3, 4]


def test_vllm_spec_needs_the_deployment_backend():
    spec = BackendSpec(kind="vllm", model="qwen")
    with pytest.raises(ValueError, match="handle"):
        make_backend(spec)
    engine = ScriptedBackend(name="vllm", model="qwen")
    assert make_backend(spec, vllm_backend=engine) is engine


def test_profile_backend_selection():
    hosted = LLMGroup(backend="vllm", model="qwen", num_gpus=0.5, gpu_memory_utilization=0.4)
    s = with_profile_backend(LLMSettings(backends=[ENDPOINT]), hosted)
    assert [(b.kind, b.model) for b in s.backends] == [("vllm", "qwen"), ("openai", "qwen")]
    assert with_profile_backend(s, hosted) == s  # already there
    with pytest.raises(ValueError, match="MEMSERVE_LLM__BACKENDS"):
        with_profile_backend(LLMSettings(), LLMGroup(backend="openai"))
    assert not with_profile_backend(LLMSettings(), LLMGroup()).enabled


def test_package_exports_resolve_and_light_modules_skip_openai():
    import subprocess
    import sys

    import serve_app.llm as llm

    for name in llm.__all__:
        assert getattr(llm, name) is not None
    code = "import sys, serve_app.llm.jsonreply; print('openai' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
