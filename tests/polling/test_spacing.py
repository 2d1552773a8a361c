"""The gap between two status queries of one task is never under the instance's
min_poll_interval_s, after jitter, whatever planned it (Jimmy asks for one query every
5-10 s: with ±10 % jitter on a 5 s interval, half the gaps used to be under 5 s)."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import KIND_DEFAULTS, PollSchedule, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker
from app.models import TaskStatus
from app.polling.outcomes import PollResult
from app.polling.repository import PollingRepository
from app.polling.service import PollingService
from app.providers.base import PollOutcome, RateLimited, TransientError
from app.schedule.forecasts import Forecasts
from tests.helpers import ARCHIVE_OFF

JIMMY_DEFAULTS = KIND_DEFAULTS[ProviderKind.JIMMY_SOUNDCLONE]
DOCUMENTED_FLOOR_S = 5.0  # docs/providers.md: "one query every 5-10 s"
POLLS = 40

PROCESSING = PollResult(outcome=PollOutcome(TaskStatus.PROCESSING, "processing"))
QUEUED = PollResult(outcome=PollOutcome(TaskStatus.QUEUED, "queued"))
UNKNOWN = PollResult(outcome=PollOutcome(None, "rendering"))
TIMEOUT = PollResult(error=TransientError("no answer", code="timeout"))
RATE_LIMITED = PollResult(error=RateLimited("slow down", retry_after_s=1.0, code="http_429"))


def jimmy(schedule: PollSchedule) -> ProviderSettings:
    return ProviderSettings(
        kind=ProviderKind.JIMMY_SOUNDCLONE, **{**JIMMY_DEFAULTS, "schedule": schedule}
    )


async def planned_gaps(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: ProviderSettings,
    results: list[PollResult],
) -> list[float]:
    """Apply `results` one by one to a fresh Jimmy task through the engine's own service,
    and return each planned gap: from the poll to the next one it planned."""
    external_id = f"audio_{uuid.uuid4()}"
    created = await client.post("/v1/tasks", json={"provider": "jimmy", "external_id": external_id})
    assert created.status_code == 201, created.text
    sessions = create_sessionmaker(engine)
    rng = random.Random(11)
    gaps = []
    for result in results:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE tasks SET next_poll_at = now() - interval '1 second'"))
        async with sessions.begin() as session:
            [claim] = await PollingRepository(session).claim_due(
                "jimmy", limit=1, owner="test", lease_s=30
            )
        async with sessions.begin() as session:
            service = PollingService(
                session,
                settings,
                auth_retry_s=300,
                rng=rng,
                forecasts=Forecasts(ttl_s=0),
                archive=ARCHIVE_OFF,
            )
            await service.apply(claim, result)
        async with engine.connect() as conn:
            gap = await conn.scalar(text("SELECT next_poll_at - last_polled_at FROM tasks"))
        assert isinstance(gap, timedelta)
        gaps.append(gap.total_seconds())
    return gaps


@pytest.mark.parametrize("schedule", list(PollSchedule))
@pytest.mark.parametrize(
    ("name", "results"),
    [
        ("running", [QUEUED, PROCESSING] + [PROCESSING] * (POLLS - 2)),
        ("status changes", [QUEUED, PROCESSING, UNKNOWN] * (POLLS // 3)),
        ("transient errors", [PROCESSING, TIMEOUT] * (POLLS // 2)),
        ("rate limited", [PROCESSING, RATE_LIMITED] * (POLLS // 2)),
    ],
)
async def test_jimmy_gaps_are_never_under_its_documented_5_s(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    schedule: PollSchedule,
    name: str,
    results: list[PollResult],
) -> None:
    gaps = await planned_gaps(client, engine, jimmy(schedule), results)

    under = [round(gap, 3) for gap in gaps if gap < DOCUMENTED_FLOOR_S]
    assert not under, f"{len(under)} of {len(gaps)} gaps under 5 s ({name}): {under}"
    assert max(gaps) <= 4 * JIMMY_DEFAULTS["max_poll_interval_s"]  # error backoff's cap


async def test_the_floor_wins_over_the_deadline(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A deadline closer than the floor does not squeeze the last poll in early: it comes
    one floor after the previous one, at most one floor after deadline_at."""
    settings = jimmy(PollSchedule.FIXED)
    external_id = f"audio_{uuid.uuid4()}"
    created = await client.post(
        "/v1/tasks", json={"provider": "jimmy", "external_id": external_id, "deadline_s": 60}
    )
    assert created.status_code == 201
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE tasks SET next_poll_at = now() - interval '1 second', "
                "deadline_at = now() + interval '2 seconds'"
            )
        )
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        [claim] = await PollingRepository(session).claim_due(
            "jimmy", limit=1, owner="test", lease_s=30
        )
    async with sessions.begin() as session:
        service = PollingService(
            session,
            settings,
            auth_retry_s=300,
            rng=random.Random(3),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        await service.apply(claim, PROCESSING)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT status, next_poll_at - last_polled_at AS gap, "
                    "next_poll_at - deadline_at AS past_deadline FROM tasks"
                )
            )
        ).one()
    assert row.status == "processing"
    assert row.gap >= timedelta(seconds=DOCUMENTED_FLOOR_S)
    assert timedelta(0) < row.past_deadline <= timedelta(seconds=DOCUMENTED_FLOOR_S)
