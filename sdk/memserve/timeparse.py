"""Timestamp parsing for incoming messages: ISO 8601 or LightMem's `2023/05/20 (Sat) 00:44`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_LIGHTMEM = re.compile(
    r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})\s*(?:\((Mon|Tue|Wed|Thu|Fri|Sat|Sun)\))?\s*"
    r"(?:(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$",
    re.IGNORECASE,
)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TimestampError(ValueError):
    """The text is not a timestamp in a supported format."""


def parse_timestamp(value: str | datetime) -> datetime:
    """Parse to an aware UTC datetime. Naive inputs are taken as UTC."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if not text:
            raise TimestampError("empty timestamp")
        m = _LIGHTMEM.match(text)
        if m:
            dt = _from_lightmem(m, text)
        else:
            try:
                # Python 3.11 accepts the full ISO 8601 forms, including a trailing Z.
                dt = datetime.fromisoformat(text)
            except ValueError:
                raise TimestampError(
                    f"unsupported timestamp {text!r}: use ISO 8601 "
                    "(2023-05-20T00:44:00Z) or '2023/05/20 (Sat) 00:44'"
                ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        raise TimestampError(f"timestamp {value!s} is out of range") from None


def _from_lightmem(m: re.Match[str], text: str) -> datetime:
    year, month, day, weekday, hh, mm, ss = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError as e:
        raise TimestampError(f"invalid date in {text!r}: {e}") from None
    if weekday and _WEEKDAYS[dt.weekday()] != weekday.lower():
        raise TimestampError(f"weekday {weekday} in {text!r} does not match the date ({dt:%a})")
    return dt


def weekday_name(dt: datetime) -> str:
    return dt.strftime("%a")
