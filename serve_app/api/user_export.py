"""The JSON Lines format of a user's export, written and read here.

Line 1: {"type": "header", "format": FORMAT, "version": 1, "user_id", "memory_version"};
then one {"type": KIND, "data": {...}} per stored row (serve_app/storage/export_repo.py says
which kinds and tables); last: {"type": "end", "counts": {KIND: n}}, so a cut-off file is
refused instead of loaded in part.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping

from serve_app.api.errors import ApiError

FORMAT = "memserve.user-export"
VERSION = 1


def header(user_id: str, memory_version: int) -> str:
    return (
        json.dumps(
            {
                "type": "header",
                "format": FORMAT,
                "version": VERSION,
                "user_id": user_id,
                "memory_version": memory_version,
            }
        )
        + "\n"
    )


async def lines(user_id: str, rows: AsyncIterator[tuple[str, str | int]]) -> AsyncIterator[str]:
    """The export's lines from export_repo.export_user's output (records as JSON text)."""
    counts: dict[str, int] = {}
    async for kind, value in rows:
        if kind == "memory_version":
            yield header(user_id, int(value))
            continue
        counts[kind] = counts.get(kind, 0) + 1
        yield f'{{"type": {json.dumps(kind)}, "data": {value}}}\n'
    yield json.dumps({"type": "end", "counts": counts}) + "\n"


class Parsed:
    """An export read back: records per kind, and the memory version it was taken from."""

    def __init__(self, records: dict[str, list[dict]], memory_version: int | None) -> None:
        self.records = records
        self.memory_version = memory_version

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.records.items() if v}


def _bad(line: int, message: str) -> ApiError:
    return ApiError(422, "invalid_import", f"line {line}: {message}")


def parse(body: bytes, fields: Mapping[str, set[str]]) -> Parsed:
    """Read an export; `fields` names, per kind, the keys a record may have. ApiError 422
    naming the line for anything else: not JSON, unknown type or key, no header or end,
    counts that do not match."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_import", "the body is not UTF-8") from None
    records: dict[str, list[dict]] = {k: [] for k in fields}
    memory_version: int | None = None
    seen_header = False
    end: dict | None = None
    n = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if end is not None:
            raise _bad(n, "a line after the end line")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _bad(n, f"not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise _bad(n, 'not an object with a "type"')
        kind = obj["type"]
        if not seen_header:
            if kind != "header" or obj.get("format") != FORMAT:
                raise _bad(n, f'the first line must be the header of a "{FORMAT}" export')
            if obj.get("version") != VERSION:
                raise _bad(n, f"format version {obj.get('version')!r}, expected {VERSION}")
            mv = obj.get("memory_version")
            if mv is not None and not isinstance(mv, int):
                raise _bad(n, "memory_version must be an integer")
            memory_version = mv
            seen_header = True
            continue
        if kind == "end":
            end = obj
            continue
        if kind not in fields:
            raise _bad(n, f"unknown type {kind!r} (expected one of {', '.join(fields)})")
        data = obj.get("data")
        if not isinstance(data, dict):
            raise _bad(n, '"data" must be an object')
        unknown = set(data) - fields[kind]
        if unknown:
            raise _bad(n, f"{kind} has unknown field(s) {', '.join(sorted(unknown))}")
        records[kind].append(data)
    if not seen_header:
        raise ApiError(422, "invalid_import", "empty body: expected an export")
    if end is None:
        raise _bad(n, "no end line: the export is cut off")
    parsed = Parsed(records, memory_version)
    counts = end.get("counts")
    if not isinstance(counts, dict) or {k: v for k, v in counts.items() if v} != parsed.counts():
        raise ApiError(
            422,
            "invalid_import",
            f"the end line counts {counts!r}, the body holds {parsed.counts()!r}",
        )
    return parsed
