"""Properties of the task state machine (app/tasks/transitions.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.models.task import TERMINAL_STATUSES, TaskStatus
from app.tasks.transitions import can_transition, event_type
from tests.properties import PROPERTY

S = TaskStatus
statuses = st.sampled_from(list(TaskStatus))
# pending < queued < processing < every terminal status
PHASE = {S.PENDING: 0, S.QUEUED: 1, S.PROCESSING: 2} | dict.fromkeys(TERMINAL_STATUSES, 3)


@settings(PROPERTY, max_examples=100)
@given(st.sampled_from(sorted(TERMINAL_STATUSES)), statuses)
def test_terminal_statuses_are_absorbing(terminal: TaskStatus, new: TaskStatus) -> None:
    assert not can_transition(terminal, new)


@settings(PROPERTY, max_examples=100)
@given(statuses, statuses)
def test_transitions_only_move_forward(current: TaskStatus, new: TaskStatus) -> None:
    allowed = can_transition(current, new)
    if allowed:
        assert PHASE[new] > PHASE[current]
    # Every non-terminal status may jump straight to any later phase.
    if not current.is_terminal and PHASE[new] > PHASE[current]:
        assert allowed


@settings(PROPERTY, max_examples=100)
@given(statuses, statuses)
def test_every_allowed_transition_has_its_own_event_type(
    current: TaskStatus, new: TaskStatus
) -> None:
    if can_transition(current, new):
        assert event_type(new) == f"task.{new.value}"
    assert (event_type(current) == event_type(new)) == (current == new)


@settings(PROPERTY, max_examples=200)
@given(st.lists(statuses, max_size=30))
def test_any_sequence_of_reports_ends_in_at_most_one_terminal_status(
    reports: list[TaskStatus],
) -> None:
    """Apply upstream reports in any order, as the poller would: ignore refused ones."""
    path = [S.PENDING]
    for report in reports:
        if can_transition(path[-1], report):
            path.append(report)
    assert len(path) <= len(PHASE.keys() - TERMINAL_STATUSES) + 1
    assert [PHASE[s] for s in path] == sorted({PHASE[s] for s in path})
    terminals = [s for s in path if s.is_terminal]
    assert len(terminals) <= 1
    assert not terminals or path[-1] is terminals[0]
    # The first terminal report, if any, is the one that sticks.
    first_terminal = next((r for r in reports if r.is_terminal), None)
    assert (terminals[0] if terminals else None) is first_terminal
