"""GET /v1/overview: for operators, every instance's and process's figures; a tenant's key
gets a 403 that points to its own counts in GET /v1/providers."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.overview.repository import ActivityRepository, Counts
from app.schedule.repository import ForecastRepository
from tests.helpers import OPS_KEY, READER_KEY, assert_error

OPS = {"Authorization": f"Bearer {OPS_KEY}"}


async def test_an_operator_sees_the_deployment(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        repo = ActivityRepository(session)
        await repo.add(
            "replica-1",
            [
                ("minimax", Counts(polls=30, succeeded=3, detection_gap=[0, 2, 1])),
                (None, Counts(delivered=6, delivery_retries=3, delivery_latency=[4, 0, 0, 0, 0])),
            ],
        )
        await repo.add("replica-2", [("minimax", Counts(polls=30, detection_gap=[0, 0, 1]))])

    response = await client.get("/v1/overview", headers=OPS)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["polls_per_s"] == 1.0
    assert shown["deliveries_per_s"] == 0.15
    assert shown["delivered_per_s"] == 0.1
    # Every minute of the hour, the activity in the last one.
    assert len(shown["minutes"]) == shown["window_minutes"] == 60
    # In the last minute (or the one before, if it just turned).
    assert sum(m["polls"] for m in shown["minutes"][-2:]) == 60
    assert sum(m["polls"] for m in shown["minutes"]) == 60
    gap = shown["detection_gap"]
    assert gap["count"] == 4
    assert [b["count"] for b in gap["buckets"][:3]] == [0, 2, 2]
    assert gap["buckets"][-1]["le_s"] is None
    assert gap["p50_s"] == 1.0  # the 2nd of 4 is the top of the (0.5, 1] bucket
    latency = shown["delivery_latency"]
    assert (latency["count"], latency["p99_s"]) == (4, 0.05)
    minimax = next(i for i in shown["instances"] if i["provider"]["name"] == "minimax")
    assert minimax["polls_per_s"] == 1.0
    rate = minimax["provider"]["effective_rate_per_s"]
    assert minimax["budget_used"] == round(1.0 / rate, 3)
    assert minimax["provider"]["base_url"]  # as an operator sees the instance


async def test_an_empty_deployment_shows_zeros_and_no_quantiles(client: httpx.AsyncClient) -> None:
    shown = (
        await client.get("/v1/overview", headers={"Authorization": f"Bearer {READER_KEY}"})
    ).json()
    assert (shown["polls_per_s"], shown["deliveries_per_s"]) == (0, 0)
    assert shown["detection_gap"]["count"] == 0
    assert shown["detection_gap"]["p50_s"] is None
    assert shown["active_tasks"] == {}


async def test_a_tenant_is_pointed_to_its_own_counts(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/v1/overview"), 403, "forbidden")
    assert "GET /v1/providers" in error["message"]


async def test_tasks_by_status_are_the_forecasts_counts_summed(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        await BudgetRepository(session).ensure_rows(settings.providers)
        forecasts = ForecastRepository(session)
        for name, counts in (
            ("minimax", {"pending": 3, "queued": 0, "processing": 2}),
            ("jimmy", {"pending": 1, "queued": 4, "processing": 0}),
        ):
            await forecasts.record_forecast(
                name,
                demand_per_s=1.0,
                capacity_per_s=2.0,
                hit_chance=0.5,
                active_tasks=sum(counts.values()),
                tasks_by_status=counts,
                expected_delay_s=3.0,
                saturated=False,
            )
    shown = (await client.get("/v1/overview", headers=OPS)).json()
    assert shown["active_tasks"] == {"pending": 4, "processing": 2, "queued": 4}
    minimax = next(i for i in shown["instances"] if i["provider"]["name"] == "minimax")
    assert minimax["provider"]["saturation"]["tasks_by_status"]["pending"] == 3
