"""POST /v1/memories besides the worker call: the request's messages as rows to store, and the
wait (wait=true) until every one of them is searchable."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

from memserve.models import AddMemoriesRequest
from serve_app.storage.postgres import NewMessage, Repository


def new_messages(req: AddMemoriesRequest, now: datetime) -> list[NewMessage]:
    """Messages without an id get a fresh one, without a timestamp the time of the request."""
    return [
        NewMessage(
            message_id=m.message_id or str(uuid.uuid4()),
            role=m.role,
            name=m.name,
            content=m.content,
            ts=m.timestamp or now,  # type: ignore[arg-type]
            ts_provided=m.timestamp is not None,
            metadata=req.metadata or {},
        )
        for m in req.messages
    ]


async def wait_processed(
    repo: Repository, user_id: str, session_id: str, ids: list[str], timeout_s: float
) -> int:
    """Poll until the messages are processed or `timeout_s` passes; how many are still not."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        pending = await repo.count_unfinished(user_id, session_id, ids)
        if pending == 0 or time.monotonic() > deadline:
            return pending
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)
