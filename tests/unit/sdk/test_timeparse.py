from datetime import UTC, datetime, timedelta, timezone

import pytest

from memserve.timeparse import TimestampError, parse_timestamp, weekday_name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2023-05-20T00:44:00Z", datetime(2023, 5, 20, 0, 44, tzinfo=UTC)),
        ("2023-05-20T02:44:00+02:00", datetime(2023, 5, 20, 0, 44, tzinfo=UTC)),
        ("2023-05-20", datetime(2023, 5, 20, tzinfo=UTC)),
        ("2023-05-20 00:44:05.250", datetime(2023, 5, 20, 0, 44, 5, 250000, tzinfo=UTC)),
        ("2023/05/20 (Sat) 00:44", datetime(2023, 5, 20, 0, 44, tzinfo=UTC)),
        ("2023/5/20 00:44", datetime(2023, 5, 20, 0, 44, tzinfo=UTC)),
        ("2023/05/20 (sat)", datetime(2023, 5, 20, tzinfo=UTC)),
    ],
)
def test_parses_supported_formats(text, expected):
    assert parse_timestamp(text) == expected


def test_aware_datetimes_are_converted_to_utc():
    dt = datetime(2023, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(dt) == datetime(2023, 1, 1, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("yesterday", "unsupported timestamp"),
        ("", "empty"),
        ("2023/02/30 (Thu) 10:00", "invalid date"),
        ("2023/05/20 (Mon) 00:44", "does not match"),
        ("2023-13-01", "unsupported timestamp"),
    ],
)
def test_rejects_bad_timestamps_with_a_reason(text, fragment):
    with pytest.raises(TimestampError, match=fragment):
        parse_timestamp(text)


def test_weekday_name():
    assert weekday_name(datetime(2023, 5, 20, tzinfo=UTC)) == "Sat"


def test_timestamps_that_leave_the_calendar_in_utc_are_errors():
    with pytest.raises(TimestampError, match="out of range"):
        parse_timestamp("0001-01-01T00:00:00+05:00")
    with pytest.raises(TimestampError, match="out of range"):
        parse_timestamp("9999-12-31T23:59:59-05:00")
