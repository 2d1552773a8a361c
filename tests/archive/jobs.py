"""Archive jobs as a poll's success starts them, shared by the archive's tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.repository import ArchiveRepository, ClaimedJob
from app.archive.service import ArchiveIntake, ArchiveService, TryResult
from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings, Settings
from app.core.db import create_sessionmaker
from app.models import Task, TaskStatus
from app.polling.outcomes import PollResult
from app.polling.repository import PollingRepository
from app.polling.service import PollingService
from app.providers.base import PollOutcome
from app.providers.minimax_t2a import MinimaxT2AResult
from app.providers.registry import adapter_for
from app.schedule.forecasts import Forecasts
from tests.helpers import DISCARD_URL

MINIMAX = ProviderSettings(kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A])
URL_DIES = datetime.now(UTC) + timedelta(hours=9)
DONE = PollOutcome(
    status=TaskStatus.SUCCEEDED,
    upstream_status="Success",
    result=MinimaxT2AResult(
        kind="minimax_t2a",
        file_id="1",
        download_url="https://x.example/1.tar",
        download_url_expires_at=URL_DIES,
    ),
)
FILE = {
    "kind": "audio",
    "name": "content-1.mp3",
    "key": "acme/x/content-1.mp3",
    "sha256": "0" * 64,
    "bytes": 3,
    "content_type": "audio/mpeg",
    "source": 0,
}


def intake(wait_s: float) -> ArchiveIntake:
    return ArchiveIntake(adapter_for(ProviderKind.MINIMAX_T2A), enabled=True, wait_s=wait_s)


async def succeed(client: httpx.AsyncClient, engine: AsyncEngine, wait_s: float) -> ClaimedJob:
    """A MiniMax task with a callback, polled to success with the archive on; its job,
    claimed."""
    body = {"provider": "minimax", "external_id": 7001, "callback_url": f"{DISCARD_URL}/cb"}
    assert (await client.post("/v1/tasks", json=body)).status_code == 201
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(next_poll_at=func.now()))
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        (claim,) = await PollingRepository(session).claim_due(
            "minimax", limit=1, owner="r1", lease_s=60
        )
    async with sessions.begin() as session:
        service = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=intake(wait_s),
        )
        await service.apply(claim, PollResult(outcome=DONE))
    async with sessions.begin() as session:
        (job,) = await ArchiveRepository(session).claim(limit=5, owner="a1", lease_s=60)
    return job


async def record(
    engine: AsyncEngine, settings: Settings, job: ClaimedJob, outcome: TryResult
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        await ArchiveService(session, settings).record(job, outcome)
