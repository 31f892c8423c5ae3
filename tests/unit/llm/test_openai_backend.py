"""The OpenAI backend against an in-process double of the HTTP API (no sockets)."""

from __future__ import annotations

import json

import httpx2
import pytest

from serve_app.llm.base import LLMBackendDown, LLMRequestRejected, LLMTransientError
from serve_app.llm.openai_backend import OpenAIBackend

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
MSGS = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Give a."}]


def completion(content: str, finish: str = "stop") -> dict:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


class FakeServer:
    """Answers each request with the next scripted (status, body) and records the bodies."""

    def __init__(self, *responses) -> None:
        self.responses = list(responses)
        self.requests: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(json.loads(request.content))
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        status, body = item
        return httpx2.Response(status, json=body)


def backend(server: FakeServer, **kw) -> OpenAIBackend:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(server))
    return OpenAIBackend(
        base_url="http://llm.test/v1", api_key="k", model="m", http_client=client, **kw
    )


async def ask(b: OpenAIBackend):
    return await b.chat_json(MSGS, SCHEMA, max_tokens=20, temperature=0.0, timeout_s=5)


async def test_json_schema_request_and_reply():
    server = FakeServer((200, completion('{"a": 1}')))
    b = backend(server, name="local", extra_body={"repetition_penalty": 1.1})
    reply = await ask(b)
    (body,) = server.requests
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True},
    }
    assert body["messages"] == MSGS
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("m", 20, 0.0)
    assert body["repetition_penalty"] == 1.1
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ('{"a": 1}', 11, 3)
    assert (reply.backend, reply.model, reply.finish_reason) == ("local", "m", "stop")


async def test_falls_back_to_json_object_with_schema_in_prompt_and_remembers():
    err = {"error": {"message": "response_format json_schema not supported", "code": 400}}
    server = FakeServer((400, err), (200, completion('{"a": 2}')), (200, completion('{"a": 3}')))
    b = backend(server)
    assert (await ask(b)).text == '{"a": 2}'
    assert b.mode == "json_object"
    assert (await ask(b)).text == '{"a": 3}'
    assert server.requests[1]["response_format"] == {"type": "json_object"}
    system = server.requests[1]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be terse.")
    assert json.dumps(SCHEMA, separators=(",", ":")) in system["content"]
    assert server.requests[2]["response_format"] == {"type": "json_object"}  # remembered
    assert len(server.requests) == 3


async def test_falls_back_to_plain_prompt_when_no_response_format_is_accepted():
    err = {"error": {"message": "unsupported", "code": 400}}
    server = FakeServer((400, err), (400, err), (200, completion('{"a": 4}')))
    b = backend(server)
    assert (await ask(b)).text == '{"a": 4}'
    assert b.mode == "prompt"
    assert "response_format" not in server.requests[2]


async def test_rejected_in_every_mode_does_not_downgrade():
    err = {"error": {"message": "prompt too long", "code": 400}}
    server = FakeServer((400, err), (400, err), (400, err))
    b = backend(server)
    with pytest.raises(LLMRequestRejected, match="prompt too long"):
        await ask(b)
    assert b.mode == "json_schema"


@pytest.mark.parametrize(
    ("response", "error"),
    [
        ((500, {"error": {"message": "boom"}}), LLMTransientError),
        ((503, {"error": {"message": "busy"}}), LLMTransientError),
        ((429, {"error": {"message": "slow down"}}), LLMTransientError),
        ((401, {"error": {"message": "bad key"}}), LLMBackendDown),
        ((404, {"error": {"message": "no such model"}}), LLMBackendDown),
        (httpx2.ConnectError("refused"), LLMTransientError),
        (httpx2.ReadTimeout("slow"), LLMTransientError),
    ],
)
async def test_error_mapping(response, error):
    with pytest.raises(error):
        await ask(backend(FakeServer(response)))


async def test_reply_without_choices_is_transient():
    body = completion("x")
    body["choices"] = []
    with pytest.raises(LLMTransientError):
        await ask(backend(FakeServer((200, body))))
