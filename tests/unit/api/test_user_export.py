"""The export's JSON Lines: written with a header and an end line, read back with every bad
line refused by number."""

import json

import pytest

from serve_app.api import user_export
from serve_app.api.errors import ApiError

FIELDS = {"message": {"message_id", "content"}, "memory": {"id", "text"}}


async def _rows():
    yield "memory_version", 2
    yield "message", '{"message_id": "m1", "content": "hi"}'
    yield "memory", '{"id": "e1", "text": "hi"}'


async def _lines() -> list[str]:
    return [line async for line in user_export.lines("u", _rows())]


async def test_lines_round_trip_through_parse():
    lines = await _lines()
    assert json.loads(lines[0]) == {
        "type": "header", "format": user_export.FORMAT, "version": 1, "user_id": "u",
        "memory_version": 2,
    }  # fmt: skip
    assert json.loads(lines[-1]) == {"type": "end", "counts": {"message": 1, "memory": 1}}
    parsed = user_export.parse("".join(lines).encode(), FIELDS)
    assert parsed.memory_version == 2
    assert parsed.records == {
        "message": [{"message_id": "m1", "content": "hi"}],
        "memory": [{"id": "e1", "text": "hi"}],
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: ls[1:], "line 1: the first line must be the header"),
        (lambda ls: ls[:-1], "line 3: no end line: the export is cut off"),
        (lambda ls: [ls[0], "{oops\n", *ls[1:]], "line 2: not JSON"),
        (lambda ls: [ls[0], '{"type": "alien", "data": {}}\n', *ls[1:]], "line 2: unknown type"),
        (lambda ls: [ls[0], '["x"]\n', *ls[1:]], 'line 2: not an object with a "type"'),
        (lambda ls: [ls[0], '{"type": "memory", "data": 3}\n', *ls[1:]], '"data" must be'),
        (
            lambda ls: [ls[0], '{"type": "memory", "data": {"id": "x", "evil": 1}}\n', *ls[1:]],
            "line 2: memory has unknown field(s) evil",
        ),
        (lambda ls: [*ls[:-1], '{"type": "end", "counts": {"memory": 5}}\n'], "the end line"),
        (lambda ls: [*ls, ls[1]], "line 5: a line after the end line"),
        (lambda ls: [], "empty body"),
        (lambda ls: [ls[0].replace('"version": 1', '"version": 9'), *ls[1:]], "format version"),
    ],
)
async def test_bad_lines_are_refused_with_their_number(edit, message):
    body = "".join(edit(await _lines())).encode()
    with pytest.raises(ApiError) as e:
        user_export.parse(body, FIELDS)
    assert (e.value.status, e.value.code) == (422, "invalid_import")
    assert message in e.value.message


def test_a_body_that_is_not_utf8_is_refused():
    with pytest.raises(ApiError, match="UTF-8"):
        user_export.parse(b"\xff\xfe", FIELDS)
