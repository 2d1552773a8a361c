"""The worker's activity rows: what this process's metrics gained between two records, with
the engine polling a scripted upstream in this process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.overview.recorder import ActivityRecorder
from tests.helpers import eventually
from tests.worker_support import ScriptedMinimax, _settings, register_many, statuses

pytestmark = pytest.mark.fast_engine


async def _rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                text(
                    "SELECT process, provider, polls, poll_errors, succeeded, failed,"
                    " delivered, detection_gap FROM activity ORDER BY id"
                )
            )
        )


async def test_a_record_holds_what_the_engine_did_since_the_last(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    recorder = ActivityRecorder(create_sessionmaker(engine), "replica-1")
    await run_engine(_settings(settings), httpx.MockTransport(ScriptedMinimax(polls_to_finish=2)))
    await register_many(client, 4)

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 4}

    await eventually(all_done)
    await recorder.record()
    [row] = await _rows(engine)
    assert (row.process, row.provider) == ("replica-1", "minimax")
    assert (row.polls, row.poll_errors, row.succeeded, row.failed) == (8, 0, 4, 0)
    # One detection gap per task found ended, each within the fast schedule's intervals.
    assert sum(row.detection_gap) == 4
    assert sum(row.detection_gap[:2]) == 4  # at most 1 s

    # Nothing since: no row.
    await recorder.record()
    assert len(await _rows(engine)) == 1


async def test_a_record_that_fails_is_carried_into_the_next(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    recorder = ActivityRecorder(create_sessionmaker(engine), "replica-1")
    await run_engine(_settings(settings), httpx.MockTransport(ScriptedMinimax(polls_to_finish=1)))
    await register_many(client, 2)

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 2}

    await eventually(all_done)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE activity RENAME TO activity_away"))
    try:
        await recorder.record()
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE activity_away RENAME TO activity"))
    await recorder.record()
    [row] = await _rows(engine)
    assert (row.polls, row.succeeded) == (2, 2)
