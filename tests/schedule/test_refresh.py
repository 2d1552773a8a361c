"""The forecast refresh (app/schedule/refresh.py) with the real engine: what finished tasks
teach, the prediction on the task object, and the saturation forecast and the hit chance it
sets, in GET /v1/providers, /metrics and the plans. Real Postgres; no timing assertions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.capacity import SPACING_FACTOR
from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.polling.worker import PollWorker
from app.schedule import plans, pricing
from app.schedule.model import size_class
from tests.helpers import OPS, api_client, eventually
from tests.schedule.support import add_samples
from tests.worker_support import ScriptedMinimax, _settings, statuses

pytestmark = pytest.mark.fast_engine


async def refresh_now(engine: AsyncEngine, poll_engine: PollWorker) -> None:
    """Make a forecast now, as if the last one were a period old (no replica repeats one
    made within half a period)."""
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE provider_state SET forecast_at = NULL"))
    await poll_engine.refresher.refresh()


@contextlib.asynccontextmanager
async def api_and_engine(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, PollWorker]]:
    """The API in process and an engine that is not started: forecasts run on demand."""
    poll_engine = PollWorker(settings, engine)
    try:
        async with api_client(settings, engine) as client:
            yield client, poll_engine
    finally:
        await poll_engine.close()


async def test_engine_learns_from_finished_tasks_and_predicts(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=2)
    poll_engine: PollWorker = await run_engine(_settings(settings), httpx.MockTransport(upstream))
    for i in range(25):
        body = {"provider": "minimax", "external_id": 9000 + 2 * i, "size_hint": 1000}
        assert (await client.post("/v1/tasks", json=body)).status_code == 201

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 25}

    await eventually(all_done)
    async with engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM completion_samples"))
        classes = (
            await conn.execute(text("SELECT DISTINCT size_class FROM completion_samples"))
        ).all()
        # A sample is the middle of the last interval between polls: after registration,
        # and before the task was seen done (so before the slowest detection).
        outside = await conn.scalar(
            text(
                "SELECT count(*) FROM completion_samples WHERE duration_s <= 0 OR duration_s"
                " > (SELECT max(extract(epoch FROM completed_at - created_at)) FROM tasks)"
            )
        )
    assert count == 25  # one per finished task, written with its terminal status
    assert classes == [(size_class(1000),)]
    assert outside == 0

    await refresh_now(engine, poll_engine)
    minimax = next(
        p
        for p in (await client.get("/v1/providers", headers=OPS)).json()["items"]
        if p["name"] == "minimax"
    )
    assert minimax["schedule"] == "adaptive"
    assert minimax["completion"]["samples"] == 25
    assert 0 < minimax["completion"]["p50_s"] <= minimax["completion"]["p90_s"]
    assert minimax["saturation"]["active_tasks"] == 0

    # A new registration, in a process that loads the shared model (a new API), gets a
    # prediction: the learned median after registration.
    async with api_client(settings, engine) as restarted:
        created = await restarted.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": 8001, "size_hint": 1000}
        )
    task = created.json()
    assert task["size_hint"] == 1000
    ready = datetime.fromisoformat(task["estimated_ready_at"])
    registered = datetime.fromisoformat(task["created_at"])
    assert (
        ready - registered == timedelta(seconds=minimax["completion"]["p50_s"])
        or abs((ready - registered).total_seconds() - minimax["completion"]["p50_s"]) < 0.01
    )

    async def finished() -> bool:
        body = (await client.get(f"/v1/tasks/{task['id']}")).json()
        return bool(body["status"] == "succeeded")

    await eventually(finished)
    done = (await client.get(f"/v1/tasks/{task['id']}")).json()
    assert done["estimated_ready_at"] is None  # terminal: nothing left to predict


async def test_saturation_is_reported_and_clears(engine: AsyncEngine, settings: Settings) -> None:
    # 60 tasks asking for a poll every 0.5 s is 120/s against a budget of 2/s. No engine
    # runs and nothing is learned: the forecast is made from the planned intervals alone.
    limited = _settings(
        settings, rate_limit_per_s=2, min_poll_interval_s=0.5, max_poll_interval_s=30
    )
    async with api_and_engine(limited, engine) as (client, poll_engine):
        await _saturation_round_trip(client, engine, poll_engine)


async def _saturation_round_trip(
    client: httpx.AsyncClient, engine: AsyncEngine, poll_engine: PollWorker
) -> None:
    limited = poll_engine.settings
    async with poll_engine.sessions.begin() as session:
        await BudgetRepository(session).ensure_rows(limited.providers)
    ids = []
    for i in range(60):
        r = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 100 + i})
        ids.append(r.json()["id"])
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET poll_interval_s = 0.5"))
    await refresh_now(engine, poll_engine)

    minimax = next(
        p
        for p in (await client.get("/v1/providers", headers=OPS)).json()["items"]
        if p["name"] == "minimax"
    )
    saturation = minimax["saturation"]
    assert saturation["poll_demand_per_s"] == 120.0
    # Capacity: 2/s less the budget's spacing margin; no completions to retrieve.
    assert saturation["poll_capacity_per_s"] == round(2 / SPACING_FACTOR, 3)
    ratio = round(120 / round(2 / SPACING_FACTOR, 3), 1)
    assert saturation["ratio"] == ratio
    assert saturation["saturated_since"] is not None
    assert saturation["active_tasks"] == 60
    # Nothing learned yet, so no hit chance to raise: the queue takes the excess. 60 tasks
    # at 2/s less the spacing margin: a round takes ~31 s, a completion waits half.
    assert saturation["hit_chance"] == 0.2
    assert saturation["expected_detection_delay_s"] == pytest.approx(
        60 / (2 / SPACING_FACTOR) / 2, 0.01
    )
    metrics = (await client.get("/metrics")).text
    demand_line = 'pollhook_provider_poll_demand_ratio{provider="minimax"} '
    assert demand_line in metrics
    demand = float(metrics.split(demand_line, 1)[1].split()[0])
    assert demand == pytest.approx(120 / (2 / SPACING_FACTOR), abs=0.05)
    assert 'pollhook_provider_expected_detection_delay_seconds{provider="minimax"}' in metrics
    assert poll_engine.forecasts.hit_chance_for("minimax") == 0.2

    first_since = saturation["saturated_since"]
    await refresh_now(engine, poll_engine)
    again = next(
        p
        for p in (await client.get("/v1/providers", headers=OPS)).json()["items"]
        if p["name"] == "minimax"
    )
    assert again["saturation"]["saturated_since"] == first_since  # one spell, one start

    for task_id in ids:
        assert (await client.delete(f"/v1/tasks/{task_id}")).status_code == 200
    await refresh_now(engine, poll_engine)
    after = next(
        p
        for p in (await client.get("/v1/providers", headers=OPS)).json()["items"]
        if p["name"] == "minimax"
    )
    assert after["saturation"]["saturated_since"] is None
    assert after["saturation"]["ratio"] == 0.0
    assert after["saturation"]["hit_chance"] == 0.2


@pytest.mark.parametrize(("rate", "saturated"), [(2.0, True), (1000.0, False)])
async def test_learned_demand_sets_the_hit_chance_every_plan_uses(
    engine: AsyncEngine, settings: Settings, rate: float, saturated: bool
) -> None:
    # 200 completions within the last minute, spread over 5..25 s: 3.3 tasks finish a
    # second, and each costs a few polls at the instance's own hit chance.
    await add_samples(engine, [5.0 + 20 * i / 199 for i in range(200)])
    limited = _settings(
        settings, rate_limit_per_s=rate, min_poll_interval_s=1.0, max_poll_interval_s=60.0
    )
    async with api_and_engine(limited, engine) as (client, poll_engine):
        async with poll_engine.sessions.begin() as session:
            await BudgetRepository(session).ensure_rows(limited.providers)
        await refresh_now(engine, poll_engine)
        minimax = next(
            p
            for p in (await client.get("/v1/providers", headers=OPS)).json()["items"]
            if p["name"] == "minimax"
        )
        saturation = minimax["saturation"]
        model = poll_engine.forecasts.model_for("minimax", None)
        assert model is not None
        provider = limited.providers["minimax"]
        own = pricing.schedule_cost(provider, model)
        assert saturation["poll_demand_per_s"] == pytest.approx(200 / 60 * own.polls, 0.01)
        assert (saturation["saturated_since"] is not None) is saturated
        chance = saturation["hit_chance"]
        assert (chance > provider.poll_hit_chance) is saturated
        assert poll_engine.forecasts.hit_chance_for("minimax") == pytest.approx(chance, 1e-3)
        planned = pricing.schedule_cost(provider, model, chance)
        assert saturation["expected_detection_delay_s"] >= planned.delay_s - 1e-3
        # A registration plans its first poll with the same hit chance.
        created = (
            await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 4242})
        ).json()
    async with engine.connect() as conn:
        wait = await conn.scalar(
            text("SELECT EXTRACT(EPOCH FROM next_poll_at - created_at) FROM tasks WHERE id = :id"),
            {"id": created["id"]},
        )
    assert float(wait) == pytest.approx(plans.plan_first(provider, model, chance), abs=1e-3)
