"""Table tests for the pure policy code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from app.models import TaskStatus
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
