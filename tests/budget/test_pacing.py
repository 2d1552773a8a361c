"""Spending the budget in a replica (app/budget/pacing.py) on a real Postgres: slots are
handed out in order to whichever request is ready, a missed slot costs the request a later
slot rather than its turn, nothing leaves before its slot, and an answer read late (a busy
event loop, as during the soak's kills and restarts) cannot bunch two replicas' requests
into one window."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.pacing import Pacer, Slot, SlotMissed, SlotSource, SlotsWentBy
from app.budget.repository import BudgetRepository
from app.core.config import KIND_DEFAULTS, PollSettings, ProviderKind, ProviderSettings
from app.core.db import create_engine, create_sessionmaker
from app.sandbox.state import max_in_window

RATE = 4.0
SETTINGS = ProviderSettings(
    kind=ProviderKind.JIMMY_SOUNDCLONE,
    **{**KIND_DEFAULTS[ProviderKind.JIMMY_SOUNDCLONE], "rate_limit_per_s": RATE},
)

Sent = tuple[float, Slot]

# Slots reserved after the ones a test is about: a request on a loaded machine that misses
# its slot takes one of these rather than giving its task back.
SPARE = 6


async def _pacer(engine: AsyncEngine, stop: asyncio.Event) -> Pacer:
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        await BudgetRepository(session).ensure_rows({"jimmy": SETTINGS})
    return Pacer("jimmy", SETTINGS, PollSettings(), sessions, stop)


def _lease() -> float:
    return time.monotonic() + 120


async def _send(source: SlotSource) -> Sent:
    """What HttpUpstream does around a request: wait for a slot, then the last-moment check,
    again from the start after a missed slot; the request would leave right after it."""
    await source()
    while not await source.before_send():
        await source()
    assert source.sent
    assert source.current is not None
    return time.monotonic(), source.current


def _within_their_slots(sends: list[Sent]) -> bool:
    return all(slot.not_before <= at <= slot.deadline for at, slot in sends)


async def test_a_slot_a_busy_request_misses_goes_to_the_next_one(engine: AsyncEngine) -> None:
    """Three claims, three slots; the first claim is busy elsewhere when the first slot comes
    up. The two waiting requests take the first two slots, the busy one the third: all three
    leave, none before its slot."""
    pacer = await _pacer(engine, asyncio.Event())
    await pacer.reserve(3)
    await pacer.reserve(SPARE)
    order: list[str] = []

    async def request(name: str, busy_s: float) -> Sent:
        await asyncio.sleep(busy_s)
        sent = await _send(pacer.slots(_lease()))
        order.append(name)
        return sent

    sends = await asyncio.gather(request("busy", 0.1), request("a", 0), request("b", 0))
    assert order[-1] == "busy"
    assert _within_their_slots(list(sends))


async def test_a_request_that_misses_its_slot_while_connecting_takes_the_next(
    engine: AsyncEngine,
) -> None:
    pacer = await _pacer(engine, asyncio.Event())
    await pacer.reserve(2 + SPARE)
    source = pacer.slots(_lease())
    await source()
    missed = source.current
    assert missed is not None
    # The connection takes longer than the slot lasts.
    await asyncio.sleep(missed.deadline - time.monotonic() + 0.05)
    assert not await source.before_send()
    assert not source.sent
    await source()  # HttpUpstream starts over
    assert await source.before_send()
    assert source.sent
    assert source.current is not None
    assert source.current != missed
    assert source.current.not_before <= time.monotonic()


async def test_slots_that_went_by_unused_are_not_replaced_but_a_follow_up_gets_one(
    engine: AsyncEngine,
) -> None:
    """A batch whose slots all went by gives its remaining tasks back rather than booking
    more (a starved replica would only book slots it misses); a follow-up request (a file
    retrieve), which had no slot reserved with its batch, reserves one."""
    pacer = await _pacer(engine, asyncio.Event())
    await pacer.reserve(1)
    await asyncio.sleep(pacer.queue[0].deadline - time.monotonic() + 0.05)
    with pytest.raises(SlotsWentBy):
        await pacer.slots(_lease())()
    assert not pacer.queue
    source = pacer.slots(_lease())
    source.sent = True  # its poll's first request went out
    await source()
    assert source.current is not None


async def test_a_paused_instance_gives_requests_back_without_saying_slots_went_by(
    engine: AsyncEngine,
) -> None:
    """Only slots that went by tell the poll loop its lead was short (it then books
    further ahead); a pause says nothing about the lead."""
    pacer = await _pacer(engine, asyncio.Event())
    await pacer.reserve(2)
    pacer.gate.pause(60)
    with pytest.raises(SlotMissed) as missed:
        await pacer.slots(_lease())()
    assert not isinstance(missed.value, SlotsWentBy)


@pytest.mark.parametrize("read_before", [True, False])
async def test_an_answer_read_late_does_not_bunch_two_replicas_into_one_window(
    engine: AsyncEngine, database_url: str, read_before: bool
) -> None:
    """Replica A's reservation answer is read 300 ms after the database took its slots (its
    event loop busy); replica B reserves the run right after. Were A's slots placed from when
    its answer was read, they would land 300 ms late, on top of B's: 5 requests in one second
    at 4/s. Placed from both ends of the round trip, every request leaves within its slot's
    span and no window holds more than the rate. Without an earlier reading to go by
    (`read_before` False), the late one is followed by another clock read at once."""
    busy_engine = create_engine(database_url)
    busy_s = [0.0]

    @event.listens_for(busy_engine.sync_engine, "after_cursor_execute")
    def _busy_event_loop(*args: Any) -> None:
        statement = args[2]
        if statement.startswith("SELECT clock_timestamp()") and busy_s[0]:
            time.sleep(busy_s[0])  # blocks the event loop between the answer and its reader
            busy_s[0] = 0.0

    stop = asyncio.Event()
    try:
        replica_a = await _pacer(busy_engine, stop)
        replica_b = await _pacer(engine, stop)
        if read_before:
            await replica_a.reserve(1)  # an earlier, prompt answer; its slot goes by
        busy_s[0] = 0.3
        await replica_a.reserve(4)
        await replica_b.reserve(4)
        await replica_a.reserve(SPARE)
        await replica_b.reserve(SPARE)
        sends = await asyncio.gather(
            *(_send(replica_a.slots(_lease())) for _ in range(4)),
            *(_send(replica_b.slots(_lease())) for _ in range(4)),
        )
    finally:
        await busy_engine.dispose()
    assert len(sends) == 8
    assert _within_their_slots(list(sends))
    assert max_in_window([at for at, _ in sends]) <= RATE


async def test_a_replicas_reservations_extend_its_run_until_another_replica_reserves(
    engine: AsyncEngine,
) -> None:
    """The pacer passes where its run left the row: its next reservation extends the run
    (the run's slots may then leave until later), another replica's reservation in between
    starts a new one."""
    stop = asyncio.Event()
    replica_a = await _pacer(engine, stop)
    replica_b = await _pacer(engine, stop)
    await replica_a.reserve(2)
    run = replica_a.queue[0].run
    await replica_a.reserve(8)
    assert all(slot.run is run for slot in replica_a.queue)
    # Ten slots at 4/s: the first six may leave until the fourth last one's time.
    assert replica_a.queue[0].deadline == pytest.approx(replica_a.queue[6].span.deadline, abs=1e-6)
    await replica_b.reserve(1)
    await replica_a.reserve(1)
    assert replica_a.queue[-1].run is not run
    assert replica_b.queue[0].run is not run
