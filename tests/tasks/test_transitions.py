"""The task state machine (app/tasks/transitions.py) as a table: which moves are allowed,
and the event type each status change writes."""

from __future__ import annotations

import pytest

from app.models import TaskStatus
from app.tasks.transitions import can_transition, event_type

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
