"""Table tests for the pure policy code."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core.config import ProviderKind
from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from app.models import TaskStatus
from app.providers.external_ids import InvalidExternalId, normalize_external_id
from app.tasks.policy import can_transition, event_type

S = TaskStatus


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (S.PENDING, S.QUEUED, True),
        (S.PENDING, S.PROCESSING, True),
        (S.PENDING, S.SUCCEEDED, True),
        (S.QUEUED, S.PROCESSING, True),
        (S.QUEUED, S.FAILED, True),
        (S.PROCESSING, S.SUCCEEDED, True),
        (S.PROCESSING, S.EXPIRED, True),
        (S.PROCESSING, S.TIMED_OUT, True),
        (S.PROCESSING, S.CANCELLED, True),
        (S.PENDING, S.PENDING, False),
        (S.PROCESSING, S.PROCESSING, False),
        (S.PROCESSING, S.QUEUED, False),
        (S.QUEUED, S.PENDING, False),
        *[
            (t, n, False)
            for t in (S.SUCCEEDED, S.FAILED, S.EXPIRED, S.TIMED_OUT, S.CANCELLED)
            for n in S
        ],
    ],
)
def test_transitions(current: TaskStatus, new: TaskStatus, allowed: bool) -> None:
    assert can_transition(current, new) is allowed


def test_event_types() -> None:
    assert [event_type(s) for s in S if s.is_terminal] == [
        "task.succeeded",
        "task.failed",
        "task.expired",
        "task.timed_out",
        "task.cancelled",
    ]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (ProviderKind.MINIMAX_T2A, 95157322514444, "95157322514444"),
        (ProviderKind.MINIMAX_T2A, "95157322514444", "95157322514444"),
        (ProviderKind.MINIMAX_T2A, "007", "7"),
        (ProviderKind.MINIMAX_T2A, 2**63 - 1, str(2**63 - 1)),
        (ProviderKind.JIMMY_SOUNDCLONE, "audio_16b635ba", "audio_16b635ba"),
        (ProviderKind.JIMMY_SOUNDCLONE, "a/b?c", "a/b?c"),
        (ProviderKind.JIMMY_SOUNDCLONE, "x" * 256, "x" * 256),
    ],
)
def test_external_ids_accepted(kind: ProviderKind, raw: object, expected: str) -> None:
    assert normalize_external_id(kind, raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (ProviderKind.MINIMAX_T2A, ""),
        (ProviderKind.MINIMAX_T2A, "0"),
        (ProviderKind.MINIMAX_T2A, -1),
        (ProviderKind.MINIMAX_T2A, 2**63),
        (ProviderKind.MINIMAX_T2A, "١٢٣"),  # non-ASCII digits
        (ProviderKind.MINIMAX_T2A, "1e5"),
        (ProviderKind.MINIMAX_T2A, "1" * 300),
        (ProviderKind.MINIMAX_T2A, True),
        (ProviderKind.MINIMAX_T2A, 1.0),
        (ProviderKind.JIMMY_SOUNDCLONE, ""),
        (ProviderKind.JIMMY_SOUNDCLONE, 5),
        (ProviderKind.JIMMY_SOUNDCLONE, "x" * 257),
        (ProviderKind.JIMMY_SOUNDCLONE, " padded"),
        (ProviderKind.JIMMY_SOUNDCLONE, "tab\there"),
        (ProviderKind.JIMMY_SOUNDCLONE, "del\x7f"),
        (ProviderKind.JIMMY_SOUNDCLONE, "a\ud800b"),  # lone surrogate: Postgres refuses it
    ],
)
def test_external_ids_rejected(kind: ProviderKind, raw: object) -> None:
    with pytest.raises(InvalidExternalId):
        normalize_external_id(kind, raw)


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


def cursor_at(stamp: str) -> str:
    """A cursor as a client could forge it, with any timestamp text."""
    raw = json.dumps([stamp, "00000000-0000-0000-0000-000000000000"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


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
