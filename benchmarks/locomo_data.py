"""LoCoMo loading shared by the offline evaluation and the HTTP yardstick.

Accepts both layouts seen in the wild: the official one (`{"sample_id", "conversation": {...},
"qa": [...]}`, possibly a list of such samples in one file) and the flat per-file one used by
the dev set (`{"speaker_a", "session_1", "session_1_date_time", ..., "qa"}`).
Only the dialogue turns are read; observations, summaries and event annotations are ignored.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from serve_app.model.messages import StoredMessage

QA_CATEGORIES = (1, 2, 3, 4)  # 5 is adversarial (no answer in the dialogue)
CATEGORY_NAMES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop"}

_SESSION_KEY = re.compile(r"^session_(\d+)$")
# "1:56 pm on 8 May, 2023"
_LOCOMO_DATE = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*([ap]m)\s+on\s+(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})\s*$", re.I
)
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}


@dataclass(frozen=True)
class LocomoTurn:
    message_id: str  # dia_id, e.g. "D1:3"
    speaker: str
    content: str  # text, with " [shares image: <caption>]" appended when the turn has one


@dataclass(frozen=True)
class LocomoSession:
    session_id: str  # "session_1"
    ts: datetime  # the session's date, UTC
    turns: tuple[LocomoTurn, ...]


@dataclass(frozen=True)
class LocomoQuestion:
    question: str
    answer: str
    evidence: tuple[str, ...]  # dia_ids that exist in the conversation
    category: int


@dataclass
class LocomoConversation:
    conv_id: str
    speakers: tuple[str, str]
    sessions: list[LocomoSession]
    questions: list[LocomoQuestion] = field(default_factory=list)

    def stored_messages(self, user_id: str | None = None) -> list[StoredMessage]:
        """The turns as the worker would read them back: one session per LoCoMo session,
        message_id = dia_id, name = speaker, ts = the session's date."""
        uid = user_id or self.conv_id
        return [
            StoredMessage(
                user_id=uid,
                session_id=s.session_id,
                message_id=t.message_id,
                seq=i,
                role="user",  # both LoCoMo speakers are people; the name tells them apart
                name=t.speaker,
                content=t.content,
                ts=s.ts,
                metadata={},
            )
            for s in self.sessions
            for i, t in enumerate(s.turns)
        ]


def parse_locomo_datetime(text: str) -> datetime:
    """Parse LoCoMo's "1:56 pm on 8 May, 2023" to an aware UTC datetime."""
    m = _LOCOMO_DATE.match(text)
    if not m:
        raise ValueError(f"unrecognised LoCoMo date {text!r}")
    hh, mm, ampm, day, month, year = m.groups()
    month_no = _MONTHS.get(month.lower())
    if month_no is None:
        raise ValueError(f"unknown month in {text!r}")
    hour = int(hh) % 12 + (12 if ampm.lower() == "pm" else 0)
    return datetime(int(year), month_no, int(day), hour, int(mm), tzinfo=UTC)


def turn_content(turn: dict) -> str:
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares image: {caption}]"
    return text


def _evidence_ids(raw: Sequence[str], known: set[str]) -> tuple[str, ...]:
    # Some annotations pack two ids in one string ("D8:6; D9:17"); a few are malformed ("D").
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", str(item)):
            if part in known and part not in out:
                out.append(part)
    return tuple(out)


def parse_sample(sample: dict, conv_id: str) -> LocomoConversation:
    conv = sample.get("conversation", sample)
    sessions: list[LocomoSession] = []
    numbered = sorted((int(m.group(1)), key) for key in conv if (m := _SESSION_KEY.match(key)))
    for n, key in numbered:
        turns = tuple(
            LocomoTurn(message_id=t["dia_id"], speaker=t["speaker"], content=turn_content(t))
            for t in conv[key]
        )
        if turns:
            ts = parse_locomo_datetime(conv[f"session_{n}_date_time"])
            sessions.append(LocomoSession(session_id=key, ts=ts, turns=turns))
    known = {t.message_id for s in sessions for t in s.turns}
    questions = []
    for qa in sample.get("qa", []):
        category = int(qa.get("category", 0))
        if category not in QA_CATEGORIES:
            continue
        evidence = _evidence_ids(qa.get("evidence", []), known)
        if not evidence:  # nothing to find: recall is undefined
            continue
        questions.append(
            LocomoQuestion(
                question=str(qa["question"]),
                answer=str(qa.get("answer", "")),
                evidence=evidence,
                category=category,
            )
        )
    speakers = (str(conv.get("speaker_a", "")), str(conv.get("speaker_b", "")))
    return LocomoConversation(
        conv_id=str(sample.get("sample_id", conv_id)),
        speakers=speakers,
        sessions=sessions,
        questions=questions,
    )


def iter_conversations(data_dir: str | Path) -> Iterator[LocomoConversation]:
    """Every conversation in DIR/*.json (or in one .json file), in file-name order."""
    path = Path(data_dir)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    for f in files:
        data = json.loads(f.read_text())
        samples = data if isinstance(data, list) else [data]
        for i, sample in enumerate(samples):
            conv_id = f.stem if len(samples) == 1 else f"{f.stem}-{i}"
            yield parse_sample(sample, conv_id)


def load_conversations(data_dir: str | Path) -> list[LocomoConversation]:
    return list(iter_conversations(data_dir))


def evidence_recall(
    ranked_source_ids: Sequence[Sequence[str]], evidence: Sequence[str], k: int
) -> float:
    """The yardstick's recall@k: walk results best first, collect their source message ids
    until k distinct ids, and return the share of the evidence among them."""
    seen: list[str] = []
    seen_set: set[str] = set()
    for ids in ranked_source_ids:
        for mid in ids:
            if mid not in seen_set and len(seen) < k:
                seen.append(mid)
                seen_set.add(mid)
        if len(seen) >= k:
            break
    if not evidence:
        return 0.0
    return sum(1 for e in evidence if e in seen_set) / len(evidence)
