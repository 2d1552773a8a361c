"""The engine's process (app/worker/runner.py): once its loops run, what it set up is kept
out of the garbage collector's full collections."""

from __future__ import annotations

import asyncio
import gc

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
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
