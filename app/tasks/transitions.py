"""The task state machine (pure).

pending -> queued -> processing -> one terminal status; any non-terminal status may jump
forward (a fast task can be seen first as already succeeded) but never back, and terminal
is final.
"""

from __future__ import annotations

from app.models.task import TaskStatus

_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.QUEUED: 1,
    TaskStatus.PROCESSING: 2,
}


def can_transition(current: TaskStatus, new: TaskStatus) -> bool:
    if current.is_terminal or new == current:
        return False
    if new.is_terminal:
        return True
    return _RANK[new] > _RANK[current]


def event_type(status: TaskStatus) -> str:
    return f"task.{status.value}"
