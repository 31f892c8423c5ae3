"""Synthetic but varied chat messages and queries for load benchmarks.

Sentences come from templates over small vocabularies (people, places, activities, objects,
times), seeded, so a run is reproducible and tens of thousands of messages are all different
without shipping a corpus. Lengths (12-40 words) are close to LoCoMo turns.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PEOPLE = (
    "Alice", "Bruno", "Chen", "Dana", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kemal", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara",
    "Ugo", "Vera", "Wen", "Ximena", "Yusuf", "Zoe",
)  # fmt: skip
PLACES = (
    "the farmers market", "Lisbon", "the climbing gym", "her grandmother's house", "Kyoto",
    "the public library", "a jazz club downtown", "the lake cabin", "Mexico City",
    "the community garden", "the new bakery on Fifth Street", "Berlin", "the pottery studio",
    "a small village in the Alps", "the animal shelter", "the university campus", "Nairobi",
    "the beach near Porto", "the children's hospital", "a vineyard in Tuscany",
)  # fmt: skip
ACTIVITIES = (
    "painting watercolor landscapes", "training for a half marathon", "learning Portuguese",
    "volunteering at a food bank", "restoring an old motorbike", "baking sourdough bread",
    "writing a fantasy novel", "playing the cello", "studying for a nursing exam",
    "building a treehouse", "coaching a kids' soccer team", "growing tomatoes and basil",
    "photographing street art", "knitting a scarf", "practicing yoga every morning",
    "organizing a charity concert", "renovating the kitchen", "learning to surf",
    "adopting a rescue dog", "mentoring young programmers", "hiking mountain trails",
    "collecting vinyl records", "taking salsa lessons", "starting a podcast about history",
)  # fmt: skip
OBJECTS = (
    "a blue ceramic vase", "a secondhand guitar", "a book about Roman history",
    "a pair of hiking boots", "a telescope", "a vintage camera", "a handmade quilt",
    "a sketchbook", "a bicycle with a basket", "a set of kitchen knives", "a chess board",
    "a framed photo of the family", "concert tickets", "a puzzle with two thousand pieces",
    "a houseplant called Gerald", "a cookbook of Ethiopian recipes", "running headphones",
)  # fmt: skip
FEELINGS = (
    "excited", "nervous", "proud", "exhausted but happy", "a little homesick", "grateful",
    "surprised", "relieved", "inspired", "frustrated", "calm", "overwhelmed",
)  # fmt: skip
TIMES = (
    "last weekend", "yesterday", "two weeks ago", "last summer", "this morning",
    "on Tuesday", "in March", "over the holidays", "a few days ago", "last night",
    "next month", "after work on Friday",
)  # fmt: skip

TEMPLATES = (
    "{p} went to {pl} {t} and came back feeling {f}.",
    "I have been {a} since {t}, and honestly it makes me feel {f}.",
    "{p} gave me {o} {t}; I keep it next to my desk.",
    "Did you know {p} started {a}? They told me about it at {pl}.",
    "We are planning a trip to {pl} {t2}, mostly for {a}.",
    "{t}, {p} and I spent the whole afternoon {a} at {pl}.",
    "I bought {o} at {pl} {t}, it reminded me of {p}.",
    "My goal this year is {a}; {p} promised to join me {t2}.",
    "Honestly I felt {f} when {p} called me {t} about {pl}.",
    "{p} is {f} because the plan for {a} fell through {t}.",
    "The best part of {t} was {a} with {p} near {pl}.",
    "Can you remind me what {p} said about {o}? It was {t}, at {pl}.",
)  # fmt: skip

QUESTION_TEMPLATES = (
    "When did {p} go to {pl}?",
    "What did {p} give as a gift?",
    "What hobby has {p} been doing lately?",
    "Where is the trip for {a} planned?",
    "How did {p} feel about {pl}?",
    "Who bought {o}?",
    "What is the goal about {a}?",
    "What did {p} say about {o}?",
)  # fmt: skip

ROLES = ("user", "assistant")


def sentence(rng: random.Random) -> str:
    """One message: one to three template sentences."""
    parts = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        parts.append(
            rng.choice(TEMPLATES).format(
                p=rng.choice(PEOPLE),
                pl=rng.choice(PLACES),
                a=rng.choice(ACTIVITIES),
                o=rng.choice(OBJECTS),
                f=rng.choice(FEELINGS),
                t=rng.choice(TIMES).capitalize(),
                t2=rng.choice(TIMES),
            )
        )
    text = " ".join(parts)
    return text[0].upper() + text[1:]


def question(rng: random.Random) -> str:
    return rng.choice(QUESTION_TEMPLATES).format(
        p=rng.choice(PEOPLE),
        pl=rng.choice(PLACES),
        a=rng.choice(ACTIVITIES),
        o=rng.choice(OBJECTS),
    )


@dataclass(frozen=True)
class SyntheticMessage:
    message_id: str
    role: str
    name: str
    content: str
    ts: datetime

    def to_api(self) -> dict:
        return {
            "role": self.role,
            "content": self.content,
            "message_id": self.message_id,
            "name": self.name,
            "timestamp": self.ts.isoformat(),
        }


def session_messages(
    session_id: str, n: int, seed: int, start: datetime | None = None
) -> list[SyntheticMessage]:
    """`n` messages of one two-speaker session, a minute apart."""
    rng = random.Random(f"{session_id}:{seed}")
    speakers = rng.sample(PEOPLE, 2)
    t0 = start or datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(700))
    out = []
    for i in range(n):
        who = i % 2 if rng.random() < 0.85 else rng.randrange(2)  # speakers need not alternate
        out.append(
            SyntheticMessage(
                message_id=f"{session_id}-m{i}",
                role=ROLES[who],
                name=speakers[who],
                content=sentence(rng),
                ts=t0 + timedelta(minutes=i),
            )
        )
    return out


def questions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [question(rng) for _ in range(n)]


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
