"""The machinery every long-running loop shares: claim leased work, run each item as its own
asyncio task, back off when the loop itself fails, sleep until woken, drain on shutdown.

The poll loop (`app/polling/loop.py`) and the delivery loop (`app/webhooks/delivery.py`)
differ only in what they claim and what they do with it; both are subclasses of
`LeasedLoop`. Nothing here holds state that is not also in Postgres: an item whose task
dies is claimed again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from functools import partial
from typing import Any

from app.core.logging import get_logger

log = get_logger("pollhook.loop")

# After an unexpected failure of the loop itself (database down, ...), wait this long,
# doubling up to the second figure.
LOOP_ERROR_BACKOFF_S = (0.5, 30.0)


class Backoff:
    """The wait after a long-running loop's own failure: LOOP_ERROR_BACKOFF_S[0], doubling
    up to [1], back to the start after a success. Only `stop` cuts a wait short: the tick
    wakes a loop every tick_s, and waking on it retried a dead database every tick
    (tests/e2e/test_outages.py)."""

    def __init__(self) -> None:
        self.wait_s = LOOP_ERROR_BACKOFF_S[0]

    def reset(self) -> None:
        self.wait_s = LOOP_ERROR_BACKOFF_S[0]

    async def wait(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.wait_s)
        self.wait_s = min(self.wait_s * 2, LOOP_ERROR_BACKOFF_S[1])


def replica_id() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is another)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeasedLoop(ABC):
    """One loop: `iteration` claims and starts work until `stop_event` is set."""

    def __init__(self, *, max_in_flight: int, error_event: str, **log_fields: str) -> None:
        self.max_in_flight = max_in_flight
        self.error_event = error_event
        self.log_fields = log_fields
        self.stop_event = asyncio.Event()
        self.wake_event = asyncio.Event()
        self.in_flight: dict[uuid.UUID, asyncio.Task[None]] = {}

    @abstractmethod
    async def iteration(self) -> None:
        """Claim what is due and start it (`start`), or sleep (`sleep`)."""

    @property
    def free(self) -> int:
        return self.max_in_flight - len(self.in_flight)

    def wake(self) -> None:
        self.wake_event.set()

    async def run(self) -> None:
        backoff = Backoff()
        while not self.stop_event.is_set():
            # Cleared before the iteration claims, never when it goes to sleep: a wake-up
            # (NOTIFY, tick, room in flight) that arrives while the claim runs is for work
            # the claim may not have seen, so the sleep after it must return at once.
            self.wake_event.clear()
            try:
                await self.iteration()
                backoff.reset()
            except Exception as exc:
                log.warning(
                    self.error_event,
                    **self.log_fields,
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                )
                await backoff.wait(self.stop_event)

    def start(self, key: uuid.UUID, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.in_flight[key] = task
        task.add_done_callback(partial(self._forget, key))

    def _forget(self, key: uuid.UUID, _: asyncio.Task[None]) -> None:
        self.in_flight.pop(key, None)
        if len(self.in_flight) == self.max_in_flight // 2:
            self.wake()  # room for another batch: don't wait for the next tick

    async def sleep(self, seconds: float) -> None:
        """Sleep until woken (tick, NOTIFY) since this iteration began, stopped, or `seconds`
        have passed."""
        if seconds <= 0 or self.stop_event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake_event.wait(), timeout=seconds)

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; give in-flight work `grace_s`, then cancel what is left (each item
        gives its claim back when cancelled, or its lease runs out)."""
        self.stop_event.set()
        self.wake()
        tasks = list(self.in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
