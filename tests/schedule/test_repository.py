"""Learning completion times in Postgres (app/schedule/repository.py): the profiles every
replica shares (and a restarted one finds again), the fallback until enough tasks have
finished, size classes, completion rates and the window of samples kept; and the scan of the
active tasks the forecast makes."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_sessionmaker
from app.schedule.forecasts import Forecasts
from app.schedule.model import ALL_SIZES, MIN_SAMPLES, SAMPLE_WINDOW, size_class
from app.schedule.repository import CompletionRepository, ForecastRepository
from tests.schedule.support import add_samples


async def refresh(engine: AsyncEngine, window: int = SAMPLE_WINDOW) -> None:
    async with create_sessionmaker(engine).begin() as session:
        repo = CompletionRepository(session)
        await repo.refresh_profiles(window=window, all_sizes=ALL_SIZES)


async def fresh_forecasts(engine: AsyncEngine) -> Forecasts:
    """What a process that just started sees."""
    forecasts = Forecasts(ttl_s=60)
    async with create_sessionmaker(engine)() as session:
        await forecasts.reload(session)
    return forecasts


async def test_completions_become_a_shared_profile_that_a_restart_finds(
    engine: AsyncEngine,
) -> None:
    await add_samples(engine, [float(s) for s in range(1, 101)])
    await refresh(engine)
    model = (await fresh_forecasts(engine)).model_for("minimax", None)
    assert model is not None
    assert model.samples == 100
    assert model.quantile(0.5) == 50.5  # percentile_cont over 1..100
    assert model.quantiles[0] == 1.0
    assert model.last == 100.0
    assert (await fresh_forecasts(engine)).model_for("jimmy", None) is None


async def test_no_model_until_enough_completions(engine: AsyncEngine) -> None:
    await add_samples(engine, [10.0] * (MIN_SAMPLES - 1))
    await refresh(engine)
    assert (await fresh_forecasts(engine)).model_for("minimax", None) is None
    await add_samples(engine, [10.0])
    await refresh(engine)
    assert (await fresh_forecasts(engine)).model_for("minimax", None) is not None


async def test_size_classes_are_learned_apart_and_fall_back_to_the_instance(
    engine: AsyncEngine,
) -> None:
    short, long = size_class(1000), size_class(8000)
    await add_samples(engine, [10.0 + i / 10 for i in range(30)], size_class=short)
    await add_samples(engine, [80.0 + i for i in range(30)], size_class=long)
    await add_samples(engine, [40.0] * 5, size_class=size_class(3))  # too few
    await refresh(engine)
    forecasts = await fresh_forecasts(engine)

    def p50(size_hint: int | None) -> float:
        model = forecasts.model_for("minimax", size_hint)
        assert model is not None
        return model.quantile(0.5)

    assert 10 <= p50(1000) <= 13  # its own class
    assert 80 <= p50(8000) <= 110
    instance = p50(None)
    assert p50(3) == instance  # class with too few samples: the instance's distribution
    assert p50(200_000) == instance  # a class never seen


async def test_completion_rate_survives_pruning(engine: AsyncEngine) -> None:
    await add_samples(engine, [5.0] * 30)
    async with create_sessionmaker(engine).begin() as session:
        repo = CompletionRepository(session)
        assert await repo.recent_completions_per_s(60.0, kept=100) == {"minimax": {None: 0.5}}
        # Only 10 kept, all from the last instant: the rate is what they span, not 10/60.
        pruned = await repo.recent_completions_per_s(60.0, kept=10)
        assert pruned["minimax"][None] > 1.0


async def test_completion_rates_per_size_class(engine: AsyncEngine) -> None:
    await add_samples(engine, [5.0] * 12)
    await add_samples(engine, [5.0] * 6, size_class=19)
    await add_samples(engine, [5.0] * 3, size_class=25)
    async with create_sessionmaker(engine).begin() as session:
        repo = CompletionRepository(session)
        assert await repo.recent_completions_per_s(60.0, kept=100) == {
            "minimax": {None: 0.2, 19: 0.1, 25: 0.05}
        }
        # Pruned to the 7 most recent: the classes keep their shares of that span.
        pruned = (await repo.recent_completions_per_s(60.0, kept=7))["minimax"]
        assert set(pruned) == {19, 25}
        assert pruned[19] == pytest.approx(4 / 3 * pruned[25])


async def test_window_keeps_the_most_recent_completions(engine: AsyncEngine) -> None:
    await add_samples(engine, [100.0] * 30)
    await add_samples(engine, [5.0] * 30)  # the upstream got faster
    async with create_sessionmaker(engine).begin() as session:
        repo = CompletionRepository(session)
        await repo.refresh_profiles(window=30, all_sizes=ALL_SIZES)
        assert await repo.prune_samples(window=30) == 30
    model = (await fresh_forecasts(engine)).model_for("minimax", None)
    assert model is not None
    assert model.samples == 30
    assert model.last == 5.0


async def test_one_scan_of_the_active_tasks_plans_and_counts_them(engine: AsyncEngine) -> None:
    tasks = [  # provider, status, planned interval
        ("minimax", "pending", None),  # not polled yet: counted, not planned
        ("minimax", "pending", 0.0),
        ("minimax", "queued", 10.0),
        ("minimax", "processing", 10.2),  # within 5 % of 10 s: one group across statuses
        ("minimax", "processing", 30.0),
        ("minimax", "succeeded", 10.0),  # terminal: neither
        ("jimmy", "processing", 5.0),
    ]
    async with engine.begin() as conn:
        for n, (provider, status, interval) in enumerate(tasks):
            await conn.execute(
                text(
                    "INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at,"
                    " completed_at, poll_interval_s) VALUES (gen_random_uuid(), 'acme', :p, :e,"
                    " :s, now() + interval '1 hour', CASE WHEN :s = 'succeeded' THEN now() END,"
                    " :i)"
                ),
                {"p": provider, "e": str(n + 1), "s": status, "i": interval},
            )
    async with create_sessionmaker(engine)() as session:
        active = await ForecastRepository(session).active_tasks()
    assert active.by_status == {
        "minimax": {"pending": 2, "queued": 1, "processing": 2},
        "jimmy": {"pending": 0, "queued": 0, "processing": 1},
    }
    assert sorted(active.planned["minimax"]) == [(pytest.approx(10.1), 2), (30.0, 1)]
    assert active.planned["jimmy"] == [(5.0, 1)]
