"""Cursors of GET /v1/memories: an opaque, URL-safe token of the last row's (ts, id)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from serve_app.api.errors import ApiError


def encode_cursor(ts: datetime, memory_id: str) -> str:
    raw = json.dumps([ts.isoformat(), memory_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(ts, id) of a cursor this API returned; ApiError 422 `invalid_cursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, memory_id = json.loads(raw)
        return datetime.fromisoformat(ts), str(uuid.UUID(memory_id))
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned") from None


def page(rows: list[dict], limit: int) -> tuple[list[dict], str | None]:
    """The first `limit` of `limit + 1` fetched rows and the cursor of the next page (None when
    there is no more)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if more else None
