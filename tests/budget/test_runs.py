"""Runs of slots and a replica's own spacing (app/budget/pacing.py, pure): which
reservation extends a run, how late a run's slots may leave, and, over any mix of replicas,
runs, idle gaps, rate cuts and requests as late as the rules let them be, that no window of
the limit ever holds more than the limit (the argument is in docs/architecture.md, "Why the
rate budget cannot be exceeded")."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.budget.capacity import (
    ARRIVAL_JITTER_S,
    SPACING_FACTOR,
    limit_window_s,
    own_spread_s,
    send_slack_s,
    window_count,
)
from app.budget.pacing import (
    ClockPlacement,
    Run,
    Slot,
    continues,
    earliest_send,
    reserved_slots,
)
from app.budget.repository import Reservation
from app.sandbox.state import max_in_window
from tests.properties import PROPERTY

RATE = 10.0
SPACING = SPACING_FACTOR / RATE
SLACK = send_slack_s(RATE)
# The database clock is the local one; the placement is sure of it to the microsecond.
EXACT = ClockPlacement(low=-1e-6, high=1e-6, at=1e9)


def _reservation(first: float, count: int, spacing: float = SPACING) -> Reservation:
    return Reservation(
        db_now=datetime.fromtimestamp(first, UTC),
        first_slot=datetime.fromtimestamp(first, UTC),
        spacing_s=spacing,
        count=count,
        effective_rate_per_s=SPACING_FACTOR / spacing,
    )


@pytest.mark.parametrize(
    ("run_next", "first", "extends"),
    [
        (100.0, 100.0, True),  # right where the run left the row
        (100.0, 100.0 + SPACING / 3, True),  # rounding of the row's timestamps
        (100.0, 100.0 + SPACING, False),  # another replica took a slot in between
        (100.0, 100.5, False),  # the row went idle: another may have had slots since
        (100.0, 99.0, False),  # an earlier reservation answered late
    ],
)
def test_a_reservation_extends_a_run_only_where_it_left_the_row(
    run_next: float, first: float, extends: bool
) -> None:
    assert continues(run_next, first, SPACING) is extends


def test_a_run_reserved_in_two_goes_lasts_as_long_as_both() -> None:
    first = reserved_slots(_reservation(100.0, 20), EXACT, None, rate_per_s=RATE, slack_s=SLACK)
    run = first[0].run
    # Its 11th slot is the 10th last: the first eleven may leave until then.
    assert run.late_until == pytest.approx(100.0 + 10 * SPACING + SLACK, abs=1e-5)
    assert first[-1].deadline == pytest.approx(100.0 + 19 * SPACING + SLACK, abs=1e-5)
    more = reserved_slots(
        _reservation(100.0 + 20 * SPACING, 5), EXACT, run, rate_per_s=RATE, slack_s=SLACK
    )
    assert more[0].run is run
    assert first[0].deadline == pytest.approx(100.0 + 15 * SPACING + SLACK, abs=1e-5)
    other = reserved_slots(
        _reservation(100.0 + 26 * SPACING, 5), EXACT, run, rate_per_s=RATE, slack_s=SLACK
    )
    assert other[0].run is not run
    assert other[0].deadline == pytest.approx(other[0].not_before + SLACK, abs=1e-5)


@pytest.mark.parametrize(
    ("recent", "earliest"),
    [
        ([], float("-inf")),
        ([1.0] * 9, float("-inf")),  # fewer than a window's worth sent
        ([float(i) / 10 for i in range(10)], own_spread_s(RATE)),
        ([float(i) / 10 for i in range(20)][-10:], 1.0 + own_spread_s(RATE)),
    ],
)
def test_a_replica_sends_no_more_than_a_window_admits_in_a_window_and_the_jitter(
    recent: list[float], earliest: float
) -> None:
    assert earliest_send(recent, RATE) == pytest.approx(earliest)


@dataclass
class _Booking:
    replica: int
    count: int
    idle_s: float  # the row stood idle this long before it (GREATEST with the clock)
    cut: float  # the effective rate is the configured one divided by this (AIMD)


def _book(bookings: list[_Booking], rate: float) -> list[tuple[int, Reservation]]:
    """The shared row: each reservation starts where the last ended or, idle, later."""
    spacing = SPACING_FACTOR / rate
    row_next = 1_000.0
    out = []
    for booking in bookings:
        first = row_next + booking.idle_s
        out.append((booking.replica, _reservation(first, booking.count, spacing * booking.cut)))
        row_next = first + booking.count * spacing * booking.cut
    return out


def _replica_sends(
    slots: list[Slot], delays: list[float], at_deadline: list[bool], rate: float
) -> list[float]:
    """One replica's requests, one per slot, each wanting to leave `delays` after its slot
    (or at the slot's last moment), held back until its own spacing allows, in the order of
    the moments they want: a request that then finds its slot's time gone sends nothing.
    What reaches the upstream is the rules' worst case."""
    wanted = [
        (slot.deadline if last else slot.not_before + delay, index)
        for index, (slot, delay, last) in enumerate(zip(slots, delays, at_deadline, strict=True))
    ]
    heapq.heapify(wanted)
    sent: list[float] = []
    while wanted:
        at, index = heapq.heappop(wanted)
        allowed = max(at, earliest_send(sent, rate))
        if allowed > at:
            heapq.heappush(wanted, (allowed, index))  # waits; others may go first
        elif at <= slots[index].deadline:
            sent.append(at)
    return sent


@PROPERTY
@given(data=st.data(), rate=st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0]))
def test_no_window_ever_holds_more_than_the_limit(data: st.DataObject, rate: float) -> None:
    replicas = data.draw(st.integers(1, 3))
    bookings = data.draw(
        st.lists(
            st.builds(
                _Booking,
                replica=st.integers(0, replicas - 1),
                count=st.integers(1, 3 * window_count(rate) + 2),
                idle_s=st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.3, 2.5]),
                cut=st.sampled_from([1.0, 1.0, 2.0]),
            ),
            min_size=1,
            max_size=12,
        )
    )
    slack = send_slack_s(rate)
    runs: dict[int, Run | None] = {}
    queues: dict[int, list[Slot]] = {}
    for replica, reservation in _book(bookings, rate):
        slots = reserved_slots(
            reservation, EXACT, runs.get(replica), rate_per_s=rate, slack_s=slack
        )
        runs[replica] = slots[0].run
        queues.setdefault(replica, []).extend(slots)
    arrivals: list[float] = []
    for slots in queues.values():
        delay = st.sampled_from([0.0, slack, 0.05, 0.4, 1.5, 6.0]) | st.floats(0, 3)
        delays = data.draw(st.lists(delay, min_size=len(slots), max_size=len(slots)))
        at_deadline = data.draw(st.lists(st.booleans(), min_size=len(slots), max_size=len(slots)))
        for at in _replica_sends(slots, delays, at_deadline, rate):
            arrivals.append(at + data.draw(st.sampled_from([0.0, ARRIVAL_JITTER_S])))
    assert max_in_window(arrivals, limit_window_s(rate)) <= window_count(rate)
