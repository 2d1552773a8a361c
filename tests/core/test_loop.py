"""The wake-up of a long-running loop (app/core/loop.py): one that arrives while an
iteration claims is kept for the sleep after the claim; one from before the iteration is
not. Each loop here is scripted: its "claim" is a step the test controls, and its sleep is
an hour long, so a sleep that waited for its timeout would hang the test rather than slow
it down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from app.core.loop import LeasedLoop

HOUR = 3600.0
# Only there to turn a lost wake-up (a sleep of an hour) into a failure instead of a hang.
HANG_S = 60.0


class ScriptedLoop(LeasedLoop):
    """Each iteration runs the next step (its claim), then sleeps an hour; after the last
    step the loop stops."""

    def __init__(self, steps: list[Callable[[ScriptedLoop], Awaitable[None]]], **kw: int) -> None:
        super().__init__(max_in_flight=kw.get("max_in_flight", 4), error_event="test_loop_error")
        self.steps = steps
        self.slept = 0
        self.sleeping = asyncio.Event()

    async def iteration(self) -> None:
        if not self.steps:
            self.stop_event.set()
            return
        await self.steps.pop(0)(self)
        self.sleeping.set()
        await self.sleep(HOUR)
        self.sleeping.clear()
        self.slept += 1


async def notify_during_claim(loop: ScriptedLoop) -> None:
    await asyncio.sleep(0)  # the claim's round trip
    loop.wake()  # a NOTIFY handled while the claim ran
    await asyncio.sleep(0)


async def test_a_wake_during_the_claim_cuts_the_next_sleep_short() -> None:
    loop = ScriptedLoop([notify_during_claim, notify_during_claim])
    await asyncio.wait_for(loop.run(), HANG_S)
    assert loop.slept == 2


async def test_room_in_flight_during_the_claim_cuts_the_next_sleep_short() -> None:
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()

    async def claim_while_work_finishes(loop: ScriptedLoop) -> None:
        for _ in range(3):
            loop.start(uuid.uuid4(), work())
        await asyncio.sleep(0)
        # They finish while the claim runs: in flight drops through half of the limit,
        # which wakes the loop.
        release.set()
        await asyncio.gather(*loop.in_flight.values())
        await asyncio.sleep(0)

    loop = ScriptedLoop([claim_while_work_finishes], max_in_flight=4)
    await asyncio.wait_for(loop.run(), HANG_S)
    assert loop.slept == 1
    assert not loop.in_flight


async def test_a_wake_from_before_the_iteration_does_not_cut_its_sleep_short() -> None:
    async def claim(loop: ScriptedLoop) -> None:
        await asyncio.sleep(0)

    loop = ScriptedLoop([claim])
    loop.wake()  # handled by the previous claim, which this iteration's claim covers
    running = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.sleeping.wait(), HANG_S)
    for _ in range(20):
        await asyncio.sleep(0)
    assert loop.sleeping.is_set()
    assert loop.slept == 0

    loop.wake()  # a wake-up during the sleep ends it
    await asyncio.wait_for(running, HANG_S)
    assert loop.slept == 1


async def test_stop_ends_a_sleep() -> None:
    async def claim(loop: ScriptedLoop) -> None:
        await asyncio.sleep(0)

    loop = ScriptedLoop([claim, claim])
    running = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.sleeping.wait(), HANG_S)
    await asyncio.wait_for(loop.drain(grace_s=1.0), HANG_S)
    await asyncio.wait_for(running, HANG_S)
    assert loop.slept == 1
    assert loop.steps, "a stopped loop claims no more"
