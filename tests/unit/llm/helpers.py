"""Small helpers shared by the LLM unit tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from serve_app.llm.extraction import SourceMessage


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class RecordingSleep:
    """Injectable sleep: records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def words(text: str) -> int:
    """A deterministic token counter for tests that do not care about the real tokenizer."""
    return len(text.split())


T0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def conversation() -> list[SourceMessage]:
    lines = [
        ("Caroline", "Hey Mel! Good to see you!"),
        ("Melanie", "Hi Caroline! I'm swamped with the kids & work."),
        ("Caroline", "I went to a LGBTQ support group yesterday and it was so powerful."),
        ("Melanie", "I painted a lake sunrise last year."),
    ]
    return [
        SourceMessage(f"msg-{i:03d}", T0 + timedelta(minutes=i), speaker, text)
        for i, (speaker, text) in enumerate(lines)
    ]


def fact(text: str, ids: list, **kw) -> dict:
    return {
        "text": text,
        "source_message_ids": ids,
        "keywords": kw.get("keywords", []),
        "entities": kw.get("entities", []),
        "time": kw.get("time"),
        "importance": kw.get("importance", 0.5),
    }


def extraction_json(facts: list[dict], summary: str = "A chat.") -> str:
    return json.dumps({"facts": facts, "summary": summary})
