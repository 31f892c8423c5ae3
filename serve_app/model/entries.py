"""Memory entries ready to be written, and the one place that gives them ids.

Entry ids are derived from their content key, so a worker that crashes after writing the
vector index and retries writes the same ids instead of duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from memserve.timeparse import weekday_name

_ENTRY_NS = uuid.UUID("5b0c3e39-8a51-4a53-9a3e-0d7cf5a4c1e1")


@dataclass(frozen=True)
class EntryRow:
    """A memory entry ready to be written (the pipeline builds these)."""

    id: str
    user_id: str
    session_id: str
    kind: str
    text: str
    index_text: str
    ts: datetime
    weekday: str
    speaker: str | None
    source_message_ids: list[str]
    topic_id: str | None
    metadata: dict
    importance: float | None
    embedding_model: str
    version: int = 1  # the memory version it belongs to


def entry_id(
    user_id: str, session_id: str, kind: str, source_ids: Sequence[str], version: int = 1
) -> str:
    # Version 1 keeps the ids it always had; other versions get ids of their own, so the same
    # message can have memories in several versions.
    parts = [user_id, session_id, kind, *source_ids]
    if version != 1:
        parts.append(f"version:{version}")
    return str(uuid.uuid5(_ENTRY_NS, "\x1f".join(parts)))


def topic_id(session_id: str, topic_index: int) -> str:
    # Session ids never contain "/" (api_models), so this is unique per user.
    return f"{session_id}/{topic_index}"


@dataclass(frozen=True)
class EntryContext:
    """Where the entries of one flushed buffer go: whose they are, which memory version, which
    embedding model indexes them."""

    user_id: str
    session_id: str
    version: int
    embedding_model: str

    def row(
        self,
        *,
        kind: str,
        key: Sequence[str],
        text: str,
        index_text: str,
        ts: datetime,
        speaker: str | None,
        source_message_ids: list[str],
        topic_index: int | None,
        metadata: dict,
        importance: float | None = None,
    ) -> EntryRow:
        """The entry whose id is made of (user, session, `kind`, `key`, version)."""
        return EntryRow(
            id=entry_id(self.user_id, self.session_id, kind, key, self.version),
            user_id=self.user_id,
            session_id=self.session_id,
            kind=kind,
            text=text,
            index_text=index_text,
            ts=ts,
            weekday=weekday_name(ts),
            speaker=speaker,
            source_message_ids=source_message_ids,
            topic_id=topic_id(self.session_id, topic_index) if topic_index is not None else None,
            metadata=metadata,
            importance=importance,
            embedding_model=self.embedding_model,
            version=self.version,
        )
