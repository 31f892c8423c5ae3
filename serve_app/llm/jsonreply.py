"""Getting the JSON object out of a model's reply text."""

from __future__ import annotations

import json
import re

from serve_app.llm.base import ParseError

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def loads_object(text: str) -> dict:
    """Parse a JSON object, tolerating code fences and prose around it (backends without
    guided decoding add them); anything else is a ParseError the model gets to see."""
    s = text.strip()
    fenced = _FENCE.match(s)
    if fenced:
        s = fenced.group(1)
    if not s.startswith("{"):
        start, end = s.find("{"), s.rfind("}")
        if start == -1 or end <= start:
            raise ParseError("the reply contains no JSON object")
        s = s[start : end + 1]
    try:
        data = json.loads(s)
    except json.JSONDecodeError as e:
        raise ParseError(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    return data


def list_field(obj: dict, key: str) -> list:
    """The list under `key` of a reply's JSON object; ParseError if it is not a list."""
    items = obj.get(key)
    if not isinstance(items, list):
        raise ParseError(f"`{key}` must be a list")
    return items


def pydantic_errors(exc) -> str:
    """A short, model-readable list of validation errors (first five)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
