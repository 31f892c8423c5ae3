from datetime import UTC, datetime

import pytest

from serve_app.api.errors import ApiError
from serve_app.api.pagination import decode_cursor, encode_cursor, page

T0 = datetime(2023, 5, 1, 12, 30, tzinfo=UTC)
MID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def test_cursor_round_trip_is_url_safe():
    cursor = encode_cursor(T0, MID)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (T0, MID)


@pytest.mark.parametrize("bad", ["", "not base64!", encode_cursor(T0, "not-a-uuid"), "WzFd"])
def test_a_cursor_this_api_did_not_return_is_422(bad):
    with pytest.raises(ApiError) as e:
        decode_cursor(bad)
    assert (e.value.status, e.value.code) == (422, "invalid_cursor")


def test_page_cuts_the_extra_row_and_points_at_the_last_one_kept():
    rows = [{"ts": T0, "id": f"{MID[:-1]}{i}"} for i in range(3)]
    kept, cursor = page(rows, 2)
    assert kept == rows[:2]
    assert decode_cursor(cursor) == (T0, rows[1]["id"])
    assert page(rows[:2], 2) == (rows[:2], None)
    assert page([], 2) == ([], None)
