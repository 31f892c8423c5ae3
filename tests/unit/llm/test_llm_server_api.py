"""Requests to and replies from `LLMServer` as plain data: no ray needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from serve_app.llm.base import LLMRequestRejected, LLMTransientError
from serve_app.llm.llm_server_api import chat_request_kwargs, reply_from_response


def test_chat_request_is_non_streaming_with_the_json_schema():
    kw = chat_request_kwargs(
        "m", [{"role": "user", "content": "x"}], {"type": "object"}, max_tokens=9, temperature=0.0
    )
    assert kw["stream"] is False
    assert kw["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_reply_from_response_objects_and_dicts():
    obj = SimpleNamespace(
        error=None,
        choices=[SimpleNamespace(message=SimpleNamespace(content="{}"), finish_reason="stop")],
        usage=SimpleNamespace(prompt_tokens=5, completion_tokens=2),
    )
    r = reply_from_response(obj, backend="vllm", model="m")
    assert (r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) == ("{}", 5, 2, "stop")
    d = {"choices": [{"message": {"content": "{}"}, "finish_reason": "length"}], "usage": None}
    assert reply_from_response(d, backend="vllm", model="m").finish_reason == "length"
    with pytest.raises(LLMRequestRejected):
        reply_from_response({"error": {"code": 400, "message": "too long"}}, backend="v", model="m")
    with pytest.raises(LLMTransientError):
        reply_from_response({"error": {"code": 503, "message": "busy"}}, backend="v", model="m")
    with pytest.raises(LLMTransientError):
        reply_from_response({"choices": []}, backend="v", model="m")
