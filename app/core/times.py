"""Times a client gives: in UTC, as the driver sends them to Postgres."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """`value` in UTC (a naive one is taken as UTC already), or ValueError for a time that is
    a datetime only in its own zone: year 1 at +14:00 or 9999-12-31 at -14:00 overflow on the
    way to UTC, which the driver takes them through (a 500 from asyncpg, unchecked)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None
