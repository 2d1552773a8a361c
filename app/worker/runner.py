"""The background engine's process loop.

Today it registers the configured provider instances in the shared state table and waits
for a stop signal; the poll and delivery loops attach here.
"""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_sessionmaker, transaction
from app.core.logging import get_logger
from app.providers.repository import ProviderStateRepository

log = get_logger("pollhook.worker")


async def run_worker(
    settings: Settings, engine: AsyncEngine, *, install_signals: bool = True
) -> None:
    stop = asyncio.Event()
    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    async with transaction(create_sessionmaker(engine)) as session:
        await ProviderStateRepository(session).ensure_rows(settings.providers)
    log.info("worker_started", providers=sorted(settings.providers))
    try:
        await stop.wait()
    finally:
        log.info("worker_stopped")
