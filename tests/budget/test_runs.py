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
    earliest_send,
    late_allowance,
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


def _reservation(
    first: float,
    count: int,
    spacing: float = SPACING,
    *,
    continues: bool = False,
    late_s: float = 0.0,
) -> Reservation:
    return Reservation(
        db_now=datetime.fromtimestamp(first, UTC),
        first_slot=datetime.fromtimestamp(first, UTC),
        spacing_s=spacing,
        count=count,
        effective_rate_per_s=SPACING_FACTOR / spacing,
        continues=continues,
        run_late_s=late_s,
    )


def test_a_run_reserved_in_two_goes_lasts_as_long_as_both() -> None:
    first = reserved_slots(_reservation(100.0, 20), EXACT, None, rate_per_s=RATE, slack_s=SLACK)
    run = first[0].run
    # Its 11th slot is the 10th last: the first eleven may leave until then.
    assert run.late_until == pytest.approx(100.0 + 10 * SPACING + SLACK, abs=1e-5)
    assert first[-1].deadline == pytest.approx(100.0 + 19 * SPACING + SLACK, abs=1e-5)
    more = reserved_slots(
        _reservation(100.0 + 20 * SPACING, 5, continues=True, late_s=0.05),
        EXACT,
        run,
        rate_per_s=RATE,
        slack_s=SLACK,
    )
    assert more[0].run is run
    # Later by the five more slots, and by the lateness the run booked, every slot of it.
    assert first[0].deadline == pytest.approx(100.0 + 15 * SPACING + SLACK + 0.05, abs=1e-5)
    assert first[-1].deadline == pytest.approx(100.0 + 19 * SPACING + SLACK + 0.05, abs=1e-5)
    other = reserved_slots(
        _reservation(100.0 + 26 * SPACING, 5), EXACT, run, rate_per_s=RATE, slack_s=SLACK
    )
    assert other[0].run is not run
    assert other[0].deadline == pytest.approx(other[0].not_before + SLACK, abs=1e-5)


@pytest.mark.parametrize(
    ("lateness", "allowance"),
    [
        ([], 0.0),
        ([0.0] * 50, 0.0),  # on time: the next replica starts right after the run
        ([0.0] * 9 + [0.5], 0.0),  # one request in ten late: not worth a gap
        ([SLACK] * 10, 0.0),  # within the slack
        ([0.03] * 10, 0.03 - SLACK),
        ([0.0] * 5 + [0.04] * 45, 0.04 - SLACK),
        ([2.0] * 10, 0.25),  # at most a quarter of the window
    ],
)
def test_a_run_books_the_lateness_most_of_the_replicas_requests_had(
    lateness: list[float], allowance: float
) -> None:
    assert late_allowance(lateness, SLACK, 1.0) == pytest.approx(allowance)


@pytest.mark.parametrize(
    ("recent", "earliest"),
    [
        ([], float("-inf")),
        ([1.0] * 9, float("-inf")),  # fewer than a window's worth sent
        ([float(i) / 10 for i in range(10)], own_spread_s(RATE)),
        ([float(i) / 10 for i in range(20)][-10:], 1.0 + own_spread_s(RATE)),
    ],
)
def test_a_replica_sends_no_more_than_a_window_admits_in_as_many_slots(
    recent: list[float], earliest: float
) -> None:
    assert earliest_send(recent, RATE) == pytest.approx(earliest)


@dataclass
class _Booking:
    replica: int
    count: int
    idle_s: float  # the row stood idle this long before it (GREATEST with the clock)
    cut: float  # the effective rate is the configured one divided by this (AIMD)
    late_s: float  # the lateness the replica books


def _book(bookings: list[_Booking], rate: float) -> list[tuple[int, Reservation]]:
    """The shared row as `BudgetRepository.reserve` keeps it: a replica's reservation
    extends its run while the row's next slot stands where it left it; another's starts the
    run's booked lateness after it, or, idle, later."""
    spacing = SPACING_FACTOR / rate
    row_next, row_late = 1_000.0, 0.0
    left_at: dict[int, float] = {}
    out = []
    for booking in bookings:
        extends = left_at.get(booking.replica) == row_next
        gap = 0.0 if extends else row_late
        first = row_next + max(gap, booking.idle_s)
        row_late = max(row_late, booking.late_s) if extends else booking.late_s
        reservation = _reservation(
            first, booking.count, spacing * booking.cut, continues=extends, late_s=row_late
        )
        out.append((booking.replica, reservation))
        row_next = first + booking.count * spacing * booking.cut
        left_at[booking.replica] = row_next
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
                late_s=st.sampled_from([0.0, 0.0, 0.02, 0.25 * limit_window_s(rate)]),
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
