"""The engine's process (app/worker/runner.py): once its loops run, what it set up is kept
out of the garbage collector's full collections; a stop records the activity not yet
recorded."""

from __future__ import annotations

import asyncio
import gc

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.metrics import POLLS
from app.worker.runner import run_worker
from tests.helpers import eventually


async def test_what_the_worker_set_up_is_frozen_once_it_runs(
    settings: Settings, engine: AsyncEngine
) -> None:
    gc.unfreeze()
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, engine, stop=stop))
    try:

        async def frozen() -> bool:
            assert not running.done(), running
            return gc.get_freeze_count() > 0

        await eventually(frozen)
    finally:
        stop.set()
        await running
        gc.unfreeze()


async def test_a_stop_records_the_activity_since_the_last_record(
    settings: Settings, engine: AsyncEngine
) -> None:
    gc.unfreeze()
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, engine, stop=stop))
    try:

        async def started() -> bool:
            assert not running.done(), running
            return gc.get_freeze_count() > 0

        await eventually(started)
        # As a poll loop counts a poll: the recorder reads the metric, not the loop.
        POLLS.labels("minimax", "unchanged").inc(3)
    finally:
        stop.set()
        await running
        gc.unfreeze()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT provider, sum(polls) FROM activity GROUP BY 1"))
        ).all()
    assert [(r[0], int(r[1])) for r in rows] == [("minimax", 3)]
