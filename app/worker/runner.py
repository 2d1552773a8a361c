"""The background engine's process: start it, wait for a stop, drain gracefully."""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.logging import get_logger
from app.polling.jobs import PollEngine

log = get_logger("pollhook.worker")


async def run_worker(
    settings: Settings, engine: AsyncEngine, *, stop: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set, or until SIGINT/SIGTERM when no event is given."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    poll_engine = PollEngine(settings, engine)
    await poll_engine.start()
    try:
        await stop.wait()
    finally:
        # Stop claiming, let in-flight polls finish (bounded), release the rest.
        await poll_engine.stop()
