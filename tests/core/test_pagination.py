"""Keyset cursors (app/core/pagination.py): what round-trips, and every cursor a client could
forge that must be refused as invalid."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from tests.helpers import cursor_at


def test_cursor_round_trip() -> None:
    stamp, row_id = datetime(2026, 11, 21, 5, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(stamp, row_id)) == (stamp, row_id)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "e30", "WyJ4IiwieSJd", "WyIyMDI2LTExLTIxVDA1OjAwOjAwIiwieCJd", "bnVsbA"]
)
def test_invalid_cursors(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.details == [{"field": "cursor", "message": "invalid cursor"}]


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("0001-01-01T00:00:00+00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T14:00:00+14:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999+00:00", datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T09:59:59-14:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_cursors_at_the_ends_of_time_decode_to_utc(stamp: str, utc: datetime) -> None:
    created_at, _ = decode_cursor(cursor_at(stamp))
    assert created_at == utc
    assert created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "0001-01-01T13:59:59.999999+14:00",
        "0001-01-01T00:00:00+00:00:01",
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "9999-12-31T23:59:59.999999-00:00:01",
        "9999-12-31T10:00:00-14:00",
    ],
)
def test_cursors_beyond_the_ends_of_time_are_invalid(stamp: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor_at(stamp))
    assert info.value.details == [{"field": "cursor", "message": "invalid cursor"}]
