"""A chat agent with long-term memory: each turn it searches memserve for what it knows about
the user, answers with any OpenAI-compatible LLM, and writes the turn back.

    python examples/agent_chat.py --user alice --base-url http://127.0.0.1:28100/v1 \
        --model smollm2-135m-instruct

Service: --memserve-url / $MEMSERVE_URL, --api-key / $MEMSERVE_API_KEY. LLM: --base-url /
$OPENAI_BASE_URL, --model / $OPENAI_MODEL, key in $OPENAI_API_KEY (any text for local
engines). Lines come from stdin (an empty line or EOF ends the chat), or from --say, repeated.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Iterable

from openai import OpenAI

from memserve import MemoryClient, NotFound
from memserve.models import ScoredMemory

SYSTEM = (
    "You are a helpful assistant with a long-term memory of this user. Use the memories below "
    "when they are relevant, and say so when you do not know.\n\nMemories:\n{memories}"
)


class MemoryChat:
    """One conversation: `turn(text)` answers and remembers."""

    def __init__(
        self,
        memory: MemoryClient,
        llm: OpenAI,
        model: str,
        user_id: str,
        session_id: str | None = None,
        user_name: str | None = None,
        memories_per_turn: int = 5,
        history_turns: int = 6,
        max_tokens: int = 256,
    ) -> None:
        self.memory, self.llm, self.model = memory, llm, model
        self.user_id = user_id
        self.session_id = session_id or f"chat-{uuid.uuid4().hex[:8]}"
        self.user_name = user_name
        self.k = memories_per_turn
        self.history: list[dict[str, str]] = []
        self.history_turns = history_turns
        self.max_tokens = max_tokens
        self.last_memories: list[ScoredMemory] = []

    def recall(self, text: str) -> list[ScoredMemory]:
        try:
            return self.memory.search(text, user_id=self.user_id, limit=self.k).results
        except NotFound:  # a user memserve has not met yet
            return []

    def turn(self, text: str) -> str:
        self.last_memories = self.recall(text)
        listed = (
            "\n".join(f"- ({m.timestamp:%Y-%m-%d}) {m.memory}" for m in self.last_memories)
            or "- (nothing yet)"
        )
        messages = [
            {"role": "system", "content": SYSTEM.format(memories=listed)},
            *self.history[-2 * self.history_turns :],
            {"role": "user", "content": text},
        ]
        reply = self.llm.chat.completions.create(
            model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0.3
        )
        answer = (reply.choices[0].message.content or "").strip()
        user_turn = {"role": "user", "content": text}
        if self.user_name:
            user_turn["name"] = self.user_name
        # Both sides of the turn, ids made by the client: a retried write stores them once.
        self.memory.add(
            [user_turn, {"role": "assistant", "content": answer or "(no answer)"}],
            user_id=self.user_id,
            session_id=self.session_id,
        )
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
        return answer


def _lines(say: list[str] | None) -> Iterable[str]:
    if say:
        yield from say
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return
        yield line.rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user", required=True, help="memserve user id")
    p.add_argument("--name", help="the user's name (speaker of their turns)")
    p.add_argument("--session", help="session id (default: a new one)")
    p.add_argument("--memserve-url", default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    p.add_argument("--model", default=os.environ.get("OPENAI_MODEL"))
    p.add_argument("--memories", type=int, default=5, help="memories searched per turn")
    p.add_argument("--say", action="append", help="a line to say (repeatable; else stdin)")
    args = p.parse_args(argv)
    if not args.model:
        p.error("give --model (or set OPENAI_MODEL)")
    llm = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused"))
    with MemoryClient(args.memserve_url, args.api_key) as memory:
        chat = MemoryChat(
            memory, llm, args.model, args.user, args.session, args.name, args.memories
        )
        for line in _lines(args.say):
            answer = chat.turn(line)
            print(f"[{len(chat.last_memories)} memories] assistant> {answer}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
