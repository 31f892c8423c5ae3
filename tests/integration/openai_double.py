"""An OpenAI-compatible chat server on loopback that plays a well-behaved extraction model:
one fact per message line of the prompt (citing that message's label), a topic summary, and a
session summary when asked for one. It can be stopped and started again on the same port,
which is how the integration tests kill the LLM mid-ingestion.

A test double for an external engine, used over real HTTP through the `openai` backend.
"""

from __future__ import annotations

import json
import re
import threading
import time

import uvicorn
from fastapi import FastAPI, Request

from deployments.local_cluster import free_port
from serve_app.pipeline.tokens import count_tokens

LINE = re.compile(r"^\[(m\d+)\] \d\d:\d\d ([^:]+): (.*)$")


def extraction_reply(prompt: str) -> dict:
    facts = []
    for line in prompt.splitlines():
        m = LINE.match(line)
        if m:
            label, speaker, text = m.groups()
            facts.append(
                {
                    # The label keeps facts unique within a reply even when compression has
                    # made two messages read alike (the parser drops repeated facts).
                    "text": f"{speaker} said ({label}) that {text}",
                    "source_message_ids": [label],
                    "keywords": text.split()[:3],
                    "entities": [speaker],
                    "time": None,
                    "importance": 0.7,
                }
            )
    return {"facts": facts, "summary": f"Conversation excerpt of {len(facts)} messages."}


def summary_reply(prompt: str) -> dict:
    people = next(
        (line.split(":", 1)[1].strip() for line in prompt.splitlines() if line.startswith("Part")),
        "",
    )
    return {
        "title": "Session summary",
        "summary": f"A conversation between {people}.",
        "topics": ["conversation"],
        "participants": [p.strip() for p in people.split(",") if p.strip()],
        "key_events": [],
        "open_items": [],
    }


def _app(double: OpenAIDouble) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "double", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        double.requests += 1
        double.system_prompts.append(body["messages"][0]["content"])
        schema = body["response_format"]["json_schema"]["schema"]
        prompt = body["messages"][-1]["content"]
        if double.bad_replies > 0:
            double.bad_replies -= 1
            text = "Sorry, I cannot answer in JSON."
        elif "key_events" in schema["properties"]:
            text = json.dumps(summary_reply(prompt))
        else:
            text = json.dumps(extraction_reply(prompt))
        prompt_tokens = sum(count_tokens(m["content"]) + 4 for m in body["messages"])
        completion_tokens = count_tokens(text)
        return {
            "id": f"chatcmpl-{double.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


class OpenAIDouble:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests = 0
        self.bad_replies = 0  # the next N replies are not JSON
        self.system_prompts: list[str] = []  # the first message of every request
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        if self._server is not None:
            return  # already serving
        config = uvicorn.Config(
            _app(self), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the OpenAI double did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        assert self._thread is not None
        self._thread.join(10)
        self._server = None
