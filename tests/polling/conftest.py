"""Fixtures of the in-process engine tests (tests/polling)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.polling.worker import PollWorker


@pytest_asyncio.fixture
async def run_engine(
    engine: AsyncEngine,
) -> AsyncIterator[Callable[[Settings, httpx.MockTransport], Any]]:
    started: list[PollWorker] = []

    async def start(settings: Settings, transport: httpx.MockTransport) -> PollWorker:
        poll_engine = PollWorker(settings, engine, transport=transport)
        await poll_engine.start()
        started.append(poll_engine)
        return poll_engine

    yield start
    for poll_engine in started:
        await poll_engine.stop()
