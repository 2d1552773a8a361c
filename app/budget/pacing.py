"""Spending the shared budget in one replica: "can this request go out now?".

A batch of claims reserves as many send slots from the instance's row
(`app/budget/repository.py`). Each slot is placed on this process's monotonic clock as a
span (`Span`): not before the database's slot, and not more than the send slack after it,
wherever in the reservation's round trip the database read its clock (`ClockPlacement`).
The slots go into one queue per instance and replica (`Pacer`), consumed in order by the
requests in the order they ask: a request that is busy elsewhere when a slot comes up does
not hold it, the next waiting request takes it. Right before a request's bytes are written
`SlotSource.before_send` checks it is within its slot's time and that the instance is not
paused; a request that missed it takes the next slot instead, so a miss costs latency,
not the task's turn.

A slot's time ends the slack after it, later by the lateness its run booked in the shared
row (`late_allowance`: what this replica's recent requests needed; the next replica's slots
start that much after the run), and later still when it lies well inside this replica's
unbroken run of slots (`Run`): any of the run's slots may leave until `run_late_until` of
its last slot. All of it only while any `window_count + 1` of the replica's own sends
stay as far apart as that many slots (`earliest_send`). Why no window then holds more
than the limit is in docs/architecture.md, "Why the rate budget cannot be exceeded".

A request is given up unsent when the loop stops, the instance pauses, the claim's lease
would run out first, or its batch's slots all went by unused (they are not replaced: a
starved replica would only book more slots to miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.budget.capacity import (
    CLOCK_DRIFT,
    SEND_LEAD_S,
    limit_window_s,
    own_spread_s,
    run_late_until,
    send_slack_s,
    window_count,
)
from app.budget.repository import BudgetRepository, Reservation
from app.core.config import PollSettings, ProviderSettings
from app.core.metrics import BUDGET_SLOTS, BUDGET_SLOTS_MISSED
from app.models import ProviderHealth

# Clock reads a reservation makes at most to place its slots precisely enough.
CLOCK_READS = 3


class SlotMissed(Exception):
    """The request cannot go out: stopping, paused, no slot to be had, or the lease ends."""


class SlotsWentBy(SlotMissed):
    """The request's batch's slots all went by before it was ready for one: the loop booked
    too short a lead for how slowly this replica gets to its requests."""


# A run books at most this share of the limit's window as lateness (`late_allowance`), and
# judges from this many of the replica's latest requests.
MAX_LATE_SHARE = 0.25
LATENESS_SAMPLES = 64

# How long a reservation places its first slot after the database's clock, beyond the
# SEND_LEAD_S a request needs to reach its send check, in clock-read round trips: the
# answer has to get back before that slot comes up. At most MAX_RESERVE_LEAD_S.
LEAD_ROUND_TRIPS = 2
MAX_RESERVE_LEAD_S = 0.5


@dataclass(frozen=True)
class Span:
    """A send slot's place on the local monotonic clock: not before `not_before`, and at
    most the slack later than the slot at `deadline`."""

    not_before: float
    deadline: float


@dataclass
class Run:
    """This replica's unbroken run of slots in the shared row: no other replica's slot lies
    between its first and its last. `next_db` is where the row's next free slot stood after
    the run's latest reservation (database clock); any slot of the run may leave until
    `late_until` (local clock), and every slot `late_s` after its own time besides: the
    lateness the run booked in the row, which the next replica's slots start after."""

    next_db: float
    late_until: float
    late_s: float


@dataclass(frozen=True)
class Slot:
    """A reserved send slot: a request leaves in [not_before, deadline]."""

    span: Span
    run: Run

    @property
    def not_before(self) -> float:
        return self.span.not_before

    @property
    def deadline(self) -> float:
        return max(self.span.deadline, self.run.late_until) + self.run.late_s


@dataclass(frozen=True)
class ClockPlacement:
    """What this process knows of the database clock: `db - local` lies in [low, high] as of
    local time `at`.

    A reservation read the database clock at some moment between sending its statement and
    its answer coming back, so `db_now - answered <= db - local <= db_now - sent`. Each
    reservation narrows what the earlier ones said (widened by CLOCK_DRIFT per second since),
    so one slow answer (a busy event loop, a row-lock wait, a reconnect after a restart)
    does not blur the placement. Measurements that cannot both be true (a clock was stepped,
    a failover to another host) start over from the newest one, which is true whatever
    happened before: causality, not any assumption about either clock, bounds it.
    """

    low: float
    high: float
    at: float

    def learn(self, db_now: float, sent: float, answered: float) -> ClockPlacement:
        widen = CLOCK_DRIFT * max(0.0, answered - self.at)
        low = max(self.low - widen, db_now - answered)
        high = min(self.high + widen, db_now - sent)
        if low > high:
            return measured(db_now, sent, answered)
        return ClockPlacement(low, high, answered)

    def place(self, db_slot: float, slack_s: float) -> Span:
        """The local span of the slot at `db_slot` on the database clock: from the latest
        local moment it may be (never early) to the earliest it may be plus the slack (never
        more than the slack late). Empty when the placement is vaguer than the slack."""
        drift = CLOCK_DRIFT * max(0.0, db_slot - self.high - self.at)
        return Span(
            not_before=db_slot - self.low + drift,
            deadline=db_slot - self.high - drift + slack_s,
        )


def measured(db_now: float, sent: float, answered: float) -> ClockPlacement:
    """The placement one reservation gives on its own."""
    return ClockPlacement(db_now - answered, db_now - sent, answered)


def reserved_slots(
    reservation: Reservation,
    placement: ClockPlacement,
    run: Run | None,
    *,
    rate_per_s: float,
    slack_s: float,
) -> list[Slot]:
    """The reservation's slots on the local clock: in `run` (this replica's latest) if the
    row says they extend it, which then lasts longer, else in a run of their own.
    `rate_per_s` is the limit the upstream counts (the configured rate): the row never
    spaces slots closer than it allows."""
    first = reservation.first_slot.timestamp()
    last = first + (reservation.count - 1) * reservation.spacing_s
    next_db = first + reservation.count * reservation.spacing_s
    late_until = placement.place(run_late_until(last, rate_per_s), slack_s).deadline
    if run is not None and reservation.continues:
        run.next_db = next_db
        run.late_until = max(run.late_until, late_until)
        run.late_s = max(run.late_s, reservation.run_late_s)
    else:
        run = Run(next_db=next_db, late_until=late_until, late_s=reservation.run_late_s)
    return [
        Slot(placement.place(first + index * reservation.spacing_s, slack_s), run)
        for index in range(reservation.count)
    ]


def late_allowance(lateness: Sequence[float], slack_s: float, window_s: float) -> float:
    """How much later than the slack this replica books its next run to send: as late as
    nine in ten of its recent requests got to their send check after they could have
    left, when that is more than the slack; at most a quarter of the window. A replica on
    time books none, and the replica after it starts right after its slots; one starved
    of CPU books what it needs not to miss them."""
    if not lateness:
        return 0.0
    ordered = sorted(lateness)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    if p90 <= slack_s:
        return 0.0
    return min(p90 - slack_s, MAX_LATE_SHARE * window_s)


def earliest_send(recent: Sequence[float], rate_per_s: float) -> float:
    """The earliest moment this replica's next request may leave, given when its latest
    ones left (oldest first): any `window_count + 1` consecutive sends of one replica lie at
    least `own_spread_s` apart, however late they are."""
    count = window_count(rate_per_s)
    if len(recent) < count:
        return float("-inf")
    return recent[-count] + own_spread_s(rate_per_s)


@dataclass
class InstanceGate:
    """Per-replica view of the instance: paused locally the moment a rate-limit or
    credential answer arrives, before the shared row says so to the other replicas."""

    # The loop's own stop event: a stopping loop sends nothing more.
    stop: asyncio.Event
    paused_until: float = 0.0
    health: ProviderHealth = ProviderHealth.OK

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class Pacer:
    """One instance's budget as this replica spends it: slots reserved from the shared row
    into a local queue, handed out in order, and checked again right before sending."""

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        poll_settings: PollSettings,
        sessions: async_sessionmaker[AsyncSession],
        stop: asyncio.Event,
    ) -> None:
        self.name = name
        self.settings = settings
        self.poll_settings = poll_settings
        self.sessions = sessions
        self.gate = InstanceGate(stop=stop)
        self.slack_s = send_slack_s(settings.rate_limit_per_s) if self.limited else 0.0
        self.placement: ClockPlacement | None = None
        # The latest clock read's round trip: how soon a reservation's answer is back.
        self.round_trip_s = 0.0
        self.run: Run | None = None
        self.queue: deque[Slot] = deque()
        # When this replica's latest requests left, as many as one window admits.
        self.sent_at: deque[float] = deque(
            maxlen=window_count(settings.rate_limit_per_s) if self.limited else 1
        )
        # How late its latest requests got to their send check.
        self.lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        # One reservation at a time, so each answer is read in the row's order and the run
        # it extends is the latest.
        self.reserving = asyncio.Lock()
        # asyncio.Lock is FIFO: requests get slots in the order they asked for one.
        self.turn = asyncio.Lock()

    @property
    def limited(self) -> bool:
        return self.settings.rate_limit_per_s > 0

    async def reserve(self, count: int) -> None:
        """Reserve `count` more slots from the shared budget into this replica's queue."""
        BUDGET_SLOTS.labels(self.name).inc(count)
        async with self.reserving:
            reservation, placement = await self._reserve(count)
            # Placed once the reservation has committed: slots it rolled back do not exist.
            slots = reserved_slots(
                reservation,
                placement,
                self.run,
                rate_per_s=self.settings.rate_limit_per_s,
                slack_s=self.slack_s,
            )
            if slots:
                self.run = slots[0].run
            self.queue.extend(slots)

    async def _reserve(self, count: int) -> tuple[Reservation, ClockPlacement]:
        rate = self.settings.rate_limit_per_s
        async with self.sessions.begin() as session:
            repository = BudgetRepository(session)
            # Both ends of a clock read's round trip bound where the database read its
            # clock. Read on its own, with the connection already checked out, rather than
            # in the reservation, whose trip also holds the wait for the row lock behind
            # the other replicas' reservations.
            await session.connection()
            placement = await self._read_clock(repository)
            reservation = await repository.reserve(
                self.name,
                count,
                configured_rate=rate,
                recovery_s=self.poll_settings.rate_recovery_s,
                lead_s=min(SEND_LEAD_S + LEAD_ROUND_TRIPS * self.round_trip_s, MAX_RESERVE_LEAD_S),
                run_next=(
                    datetime.fromtimestamp(self.run.next_db, UTC) if self.run is not None else None
                ),
                late_s=late_allowance(self.lateness, self.slack_s, limit_window_s(rate)),
            )
        return reservation, placement

    async def _read_clock(self, repository: BudgetRepository) -> ClockPlacement:
        """Narrow the placement with a clock read, and again (up to CLOCK_READS reads) while
        it is vaguer than half the slack: a slow first read (a replica starting on a busy
        machine) would otherwise leave a whole batch of slots with no span to send in."""
        placement = await self._one_clock_read(repository)
        for _ in range(CLOCK_READS - 1):
            if placement.high - placement.low <= self.slack_s / 2:
                break
            placement = await self._one_clock_read(repository)
        return placement

    async def _one_clock_read(self, repository: BudgetRepository) -> ClockPlacement:
        sent = time.monotonic()
        db_now = (await repository.clock()).timestamp()
        answered = time.monotonic()
        self.round_trip_s = answered - sent
        self.placement = (
            measured(db_now, sent, answered)
            if self.placement is None
            else self.placement.learn(db_now, sent, answered)
        )
        return self.placement

    async def take(self, lease_ends: float, *, follow_up: bool) -> Slot:
        """The next slot in the queue, handed over SEND_LEAD_S before it so the request can
        get to its send check in time.

        A follow-up request (a file retrieve) had no slot reserved with its batch: it
        reserves one when the queue is empty. Any other request finding the queue empty
        gives its task back: the batch's slots went by unused, and reserving more for it
        would book the budget further ahead the more a starved replica misses, until it
        books nothing but slots it misses."""
        async with self.turn:
            while True:
                self._check_open()
                self._drop_missed()
                if not self.queue:
                    if not follow_up:
                        raise SlotsWentBy("the batch's slots went by unused")
                    await self._top_up()
                    continue
                slot = self.queue[0]
                if slot.not_before + self.settings.request_timeout_s > lease_ends:
                    raise SlotMissed("the claim's lease would run out before the answer")
                if await self._wait_until(slot.not_before - SEND_LEAD_S):
                    continue
                return self.queue.popleft()

    async def on_time(self, slot: Slot) -> bool:
        """Wait for `slot` to start and for this replica's own spacing to allow a send; then
        whether the request may leave on it now (raises when no request may leave at all).
        A request that may leave must go through `sending` before any other await."""
        while True:
            could_leave = max(
                slot.not_before, earliest_send(self.sent_at, self.settings.rate_limit_per_s)
            )
            if not await self._wait_until(could_leave):
                break
        self._check_open()
        now = time.monotonic()
        self.lateness.append(max(0.0, now - could_leave))
        return now <= slot.deadline

    def sending(self) -> None:
        """A request leaves now: the replica's later ones keep their spacing from it."""
        self.sent_at.append(time.monotonic())

    async def _wait_until(self, moment: float) -> bool:
        """Sleep until `moment` unless stopped; whether it slept at all."""
        delay = moment - time.monotonic()
        if delay <= 0:
            return False
        if self.gate.stop.is_set():
            raise SlotMissed("stopping")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.gate.stop.wait(), timeout=delay)
        return True

    def _check_open(self) -> None:
        if self.gate.stop.is_set():
            raise SlotMissed("stopping")
        if self.gate.paused_until > time.monotonic():
            raise SlotMissed("instance paused")

    def _drop_missed(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0].deadline < now:
            self.queue.popleft()
            BUDGET_SLOTS_MISSED.labels(self.name).inc()

    async def _top_up(self) -> None:
        try:
            await self.reserve(1)
        except Exception as exc:
            # The database went away under a follow-up request: a missed turn, retried with
            # the task, not an adapter error.
            raise SlotMissed(f"no budget slot: {type(exc).__name__}") from exc

    def slots(self, lease_ends: float) -> SlotSource:
        """The slots of one poll, taken from the queue request by request."""
        return SlotSource(self, lease_ends)


class SlotSource:
    """Budget slots for one poll: one from the queue for each request (MiniMax's file
    retrieve is a second one). `sent` tells whether any request left."""

    def __init__(self, pacer: Pacer, lease_ends: float) -> None:
        self.pacer = pacer
        self.current: Slot | None = None
        self.lease_ends = lease_ends
        self.sent = False

    async def __call__(self) -> None:
        """Wait for the next request's slot."""
        if self.pacer.limited:
            self.current = await self.pacer.take(self.lease_ends, follow_up=self.sent)
        elif self.pacer.gate.stop.is_set():
            raise SlotMissed("stopping")

    async def before_send(self) -> bool:
        """Right before the bytes go out: whether the request is within its slot's span.

        Checking here rather than when the wait ends keeps connection setup out of the
        lateness: a request that waited 50 ms for a fresh connection would otherwise reach
        the upstream bunched up with the ones behind it on warm connections. Such a request
        has missed its slot: it sends nothing and queues for the next one (False)."""
        if self.current is not None and not await self.pacer.on_time(self.current):
            BUDGET_SLOTS_MISSED.labels(self.pacer.name).inc()
            self.current = None
            return False
        # An answer that arrives after the lease ran out is fenced off anyway: do not spend
        # a budget slot (and the upstream's patience) on it.
        if time.monotonic() + self.pacer.settings.request_timeout_s > self.lease_ends:
            raise SlotMissed("the claim's lease would run out before the answer")
        if self.current is not None:
            self.pacer.sending()
        self.sent = True
        return True
