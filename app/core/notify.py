"""LISTEN on a Postgres channel for as long as asked, reconnecting after losing the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.logging import get_logger
from app.core.loop import Backoff, LeasedLoop

log = get_logger("pollhook.notify")


async def listen(
    engine: AsyncEngine, channel: str, on_payload: Callable[[str], None], stop: asyncio.Event
) -> None:
    """Call `on_payload` for every notification on `channel` until `stop` is set.

    Notifications are only a latency optimisation (the loops also tick), so a lost
    connection is logged and retried with backoff, never fatal.
    """
    backoff = Backoff()
    while not stop.is_set():
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                lost = asyncio.Event()

                def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
                    on_payload(payload)

                driver.add_termination_listener(partial(_set, lost))
                await driver.add_listener(channel, on_notify)
                backoff.reset()
                waiters = {
                    asyncio.create_task(stop.wait()),
                    asyncio.create_task(lost.wait()),
                }
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()
                if not lost.is_set():
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(channel, on_notify)
        except Exception as exc:
            log.warning("listener_error", channel=channel, error=type(exc).__name__)
            await backoff.wait(stop)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


class Woken:
    """A leased loop run beside the listener that wakes it on `channel`: started together,
    drained and ended together (the delivery and archive workers)."""

    def __init__(self, loop: LeasedLoop, engine: AsyncEngine, channel: str) -> None:
        self.loop = loop
        self.engine = engine
        self.channel = channel
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.loop.run()),
            asyncio.create_task(
                listen(self.engine, self.channel, lambda _: self.loop.wake(), self._stop)
            ),
        ]

    async def drain(self, grace_s: float) -> None:
        """Stop listening and claiming; in-flight work gets `grace_s` (LeasedLoop.drain)."""
        self._stop.set()
        await self.loop.drain(grace_s)

    async def end(self) -> None:
        """Cancel whatever of the loop and the listener is still running."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
