"""Placing database-clock slots on the local clock (app/budget/pacing.py, pure): wherever
in a reservation's round trip the database read its clock, a request sent within a slot's
local span leaves no earlier than the slot and no later than the slack after it."""

from __future__ import annotations

import pytest

from app.budget.capacity import CLOCK_DRIFT
from app.budget.pacing import ClockPlacement, measured

SLACK = 0.010
# The database clock runs this far ahead of the local one (unknown to the code).
TRUE_OFFSET = 1_000.0


def _true_local(db_time: float) -> float:
    return db_time - TRUE_OFFSET


@pytest.mark.parametrize(
    ("sent", "read_at", "answered"),
    [
        (10.0, 10.0, 10.001),  # read as the statement arrived
        (10.0, 10.001, 10.001),  # read just before the answer left
        (10.0, 10.0005, 10.001),
        (10.0, 10.0, 10.0),  # no round trip at all
    ],
)
def test_one_reservation_places_its_slots_within_the_slack(
    sent: float, read_at: float, answered: float
) -> None:
    db_now = read_at + TRUE_OFFSET
    placement = measured(db_now, sent, answered)
    for ahead in (0.0, 0.1, 2.0, 8.0):
        db_slot = db_now + ahead
        span = placement.place(db_slot, SLACK)
        true = _true_local(db_slot)
        assert span.not_before >= true  # never early
        assert span.deadline <= true + SLACK  # never later than the slack
        assert span.not_before <= span.deadline  # a fast round trip leaves room to send


def test_a_slow_answer_alone_gives_no_span_to_send_in() -> None:
    """An answer read 300 ms after the statement was sent (a busy event loop): on its own it
    cannot say where its slots are to within the slack, so they cannot be used."""
    placement = measured(5.0 + TRUE_OFFSET, 5.0, 5.3)
    span = placement.place(6.0 + TRUE_OFFSET, SLACK)
    assert span.not_before > span.deadline


@pytest.mark.parametrize("read_at", [20.0, 20.15, 20.3])
def test_a_slow_answer_is_placed_by_what_the_earlier_ones_said(read_at: float) -> None:
    """The same slow answer after a fast one: its slots are placed as precisely as the fast
    one allowed (loosened by the drift bound), wherever in the slow trip the database read
    its clock."""
    fast = measured(10.0005 + TRUE_OFFSET, 10.0, 10.001)
    placement = fast.learn(read_at + TRUE_OFFSET, 20.0, 20.3)
    assert placement.high - placement.low <= 0.001 + 2 * CLOCK_DRIFT * 10.3
    db_slot = read_at + 1.0 + TRUE_OFFSET
    span = placement.place(db_slot, SLACK)
    true = _true_local(db_slot)
    assert true <= span.not_before <= span.deadline <= true + SLACK


def test_placements_that_cannot_both_hold_start_over() -> None:
    """The database clock was stepped 2 s forward (or another server answers): the old
    placement is dropped for the new measurement, which is true whatever came before."""
    before = measured(10.0 + TRUE_OFFSET, 10.0, 10.001)
    after = before.learn(20.0 + TRUE_OFFSET + 2.0, 20.0, 20.001)
    assert after == measured(20.0 + TRUE_OFFSET + 2.0, 20.0, 20.001)


def test_placement_loosens_with_time_and_with_how_far_ahead_the_slot_is() -> None:
    placement = ClockPlacement(low=TRUE_OFFSET, high=TRUE_OFFSET, at=0.0)
    near = placement.place(TRUE_OFFSET + 1.0, SLACK)
    far = placement.place(TRUE_OFFSET + 100.0, SLACK)
    assert near.deadline - near.not_before > far.deadline - far.not_before
    assert far.not_before - _true_local(TRUE_OFFSET + 100.0) == pytest.approx(CLOCK_DRIFT * 100)
