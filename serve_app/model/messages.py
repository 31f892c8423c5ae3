"""Canonical messages: what the ingress stores (`NewMessage`) and the pipeline reads back
(`StoredMessage`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

ROLES = ("user", "assistant", "system", "tool")


@dataclass(frozen=True)
class NewMessage:
    message_id: str
    role: str
    name: str | None
    content: str
    ts: datetime
    ts_provided: bool
    metadata: dict


@dataclass(frozen=True)
class StoredMessage:
    user_id: str
    session_id: str
    message_id: str
    seq: int  # order inside the session by arrival; timestamps may tie or be missing
    role: str
    name: str | None
    content: str
    ts: datetime
    metadata: dict = field(default_factory=dict)

    @property
    def speaker(self) -> str:
        """Speaker label: the name when given, else the role (roles need not alternate)."""
        return self.name or self.role
