"""A task's `result` is the typed result of its provider kind, however it was stored."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker
from app.models import Event, Task, TaskStatus
from app.polling.outcomes import PollResult
from app.polling.repository import PollingRepository
from app.polling.service import PollingService
from app.providers.base import PollOutcome
from app.providers.minimax_t2a import MinimaxT2AResult
from app.schedule.forecasts import Forecasts
from tests.helpers import ARCHIVE_OFF

MINIMAX_RESULT = {
    "kind": "minimax_t2a",
    "file_id": "95157322514496",
    "download_url": "https://cdn.example/95157322514496.tar",
    "download_url_expires_at": "2026-03-01T21:00:00Z",
    "filename": "95157322514496.tar",
}
JIMMY_RESULT = {
    "kind": "jimmy_soundclone",
    "audio_url": "https://example.com/a.mp3",
    "model_id": None,
    "subtitle_url": "https://example.com/a.srt",
}


async def stored(client: httpx.AsyncClient, engine: AsyncEngine, result: Any) -> str:
    created = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 42})
    task_id = str(created.json()["id"])
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(status="succeeded", result=result))
    return task_id


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        (MINIMAX_RESULT, MINIMAX_RESULT),
        (JIMMY_RESULT, JIMMY_RESULT),
        # Written before `filename` existed (the data migration added `kind`).
        (
            {k: v for k, v in MINIMAX_RESULT.items() if k != "filename"},
            {**MINIMAX_RESULT, "filename": None},
        ),
        (
            {"kind": "jimmy_soundclone", "audio_url": "https://example.com/a.mp3"},
            {**JIMMY_RESULT, "subtitle_url": None},
        ),
    ],
)
async def test_a_stored_result_reads_as_its_kind(
    client: httpx.AsyncClient, engine: AsyncEngine, result: Any, shown: Any
) -> None:
    task_id = await stored(client, engine, result)

    task = (await client.get(f"/v1/tasks/{task_id}")).json()

    assert task["result"] == shown


@pytest.mark.parametrize(
    "result",
    [
        {"model_id": "model_1"},  # an old Jimmy result without audio (and so without kind)
        {"kind": "jimmy_soundclone", "model_id": "model_1"},
        {"kind": "replicate", "output": "https://x"},
        {"kind": "minimax_t2a", "file_id": 1, "surprise": True},
        ["not", "an", "object"],
    ],
)
async def test_a_result_this_version_cannot_read_is_null_and_logged_never_a_500(
    client: httpx.AsyncClient, engine: AsyncEngine, result: Any
) -> None:
    task_id = await stored(client, engine, result)

    with capture_logs() as logs:
        one = await client.get(f"/v1/tasks/{task_id}")
        listed = await client.get("/v1/tasks")

    assert one.status_code == 200
    assert one.json()["result"] is None
    assert one.json()["status"] == "succeeded"
    assert listed.status_code == 200
    assert listed.json()["items"][0]["result"] is None
    unreadable = [entry for entry in logs if entry["event"] == "task.result_unreadable"]
    assert len(unreadable) == 2
    assert unreadable[0]["task_id"] == task_id


async def test_the_webhook_payload_carries_the_typed_result(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Events (the webhook bodies' `data`) carry the typed result, as the API shows it."""
    created = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 42})
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(next_poll_at=func.now()))
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        [claim] = await PollingRepository(session).claim_due(
            "minimax", limit=1, owner="test", lease_s=30
        )
    outcome = PollOutcome(
        TaskStatus.SUCCEEDED,
        "Success",
        result=MinimaxT2AResult.model_validate(MINIMAX_RESULT),
    )
    minimax = ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A]
    )
    async with sessions.begin() as session:
        service = PollingService(
            session,
            minimax,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        await service.apply(claim, PollResult(outcome=outcome))
    async with engine.connect() as conn:
        payload = await conn.scalar(select(Event.payload).where(Event.type == "task.succeeded"))
    assert payload is not None
    assert payload["id"] == created.json()["id"]
    assert payload["result"] == MINIMAX_RESULT
    assert (await client.get(f"/v1/tasks/{payload['id']}")).json()["result"] == MINIMAX_RESULT


async def test_an_event_shows_the_task_as_get_shows_it_right_after_the_change(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A task seen processing: the `task.processing` event's data is what GET returns once
    the change is committed, its next planned poll included (not the claim's lease end)."""
    created = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 43})
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(next_poll_at=func.now()))
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        [claim] = await PollingRepository(session).claim_due(
            "minimax", limit=1, owner="test", lease_s=600
        )
    minimax = ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A]
    )
    async with sessions.begin() as session:
        service = PollingService(
            session,
            minimax,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        await service.apply(claim, PollResult(outcome=PollOutcome(TaskStatus.PROCESSING, "x")))
    async with engine.connect() as conn:
        payload = await conn.scalar(select(Event.payload).where(Event.type == "task.processing"))
    shown = (await client.get(f"/v1/tasks/{created.json()['id']}")).json()
    assert payload == shown
    assert shown["status"] == "processing"
    assert shown["next_poll_at"] is not None
