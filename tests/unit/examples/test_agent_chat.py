"""examples/agent_chat.py with both services answered by httpx.MockTransport: an OpenAI
chat-completions double and a memserve double."""

from __future__ import annotations

import json

import httpx
from openai import OpenAI

from examples.agent_chat import MemoryChat
from memserve import MemoryClient

MEMORY = {
    "id": "8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f",
    "memory": "Alice: I adopted a golden retriever named Max.",
    "timestamp": "2023-05-20T10:00:00Z",
    "session_id": "s1",
    "source_message_ids": ["m1"],
    "metadata": {},
    "score": 0.9,
}


def test_each_turn_searches_answers_with_the_memories_and_writes_back():
    memserve_calls: list[httpx.Request] = []
    prompts: list[list[dict]] = []

    def memserve(request: httpx.Request) -> httpx.Response:
        memserve_calls.append(request)
        if request.url.path == "/v1/search":
            known = json.loads(request.content)["user_id"] == "alice"
            if not known:
                return httpx.Response(404, json={"error": {"code": "unknown_user", "message": "-"}})
            return httpx.Response(200, json={"results": [MEMORY], "took_ms": 1})
        ids = [m["message_id"] for m in json.loads(request.content)["messages"]]
        return httpx.Response(202, json={"session_id": "c", "accepted": 2, "message_ids": ids})

    def llm(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompts.append(body["messages"])
        return httpx.Response(
            200,
            json={
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"reply {len(prompts)}"}}],
            },
        )  # fmt: skip

    openai = OpenAI(
        base_url="http://llm.test/v1",
        api_key="k",
        http_client=httpx.Client(transport=httpx.MockTransport(llm)),
    )
    with MemoryClient("http://memserve.test", transport=httpx.MockTransport(memserve)) as mem:
        chat = MemoryChat(mem, openai, "tiny", "alice", "c", user_name="Alice")
        assert chat.turn("What is my dog called?") == "reply 1"
        assert chat.turn("And how old is he?") == "reply 2"
        stranger = MemoryChat(mem, openai, "tiny", "bob", "c2")
        assert stranger.turn("hi") == "reply 3"

    system, *rest = prompts[0]
    assert "golden retriever named Max" in system["content"]
    assert rest == [{"role": "user", "content": "What is my dog called?"}]
    assert [m["content"] for m in prompts[1][1:]] == [
        "What is my dog called?",
        "reply 1",
        "And how old is he?",
    ]
    assert "(nothing yet)" in prompts[2][0]["content"]
    writes = [json.loads(r.content) for r in memserve_calls if r.url.path == "/v1/memories"]
    assert [m["role"] for m in writes[0]["messages"]] == ["user", "assistant"]
    assert writes[0]["messages"][0]["name"] == "Alice"
    assert writes[0]["messages"][1]["content"] == "reply 1"
    assert writes[0]["session_id"] == "c" and writes[2]["user_id"] == "bob"
