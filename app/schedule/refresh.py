"""The forecast refresh: relearn each instance's completion models from its samples, then
forecast its poll demand against its budget and store the hit chance the budget calls for,
with the count of its active tasks per status that the same scan gives (`/metrics` reads it).

One replica per period does it for all (an advisory lock plus a freshness check), and
every replica then reloads its in-memory copy (`app/schedule/forecasts.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.logging import get_logger
from app.models.task import ACTIVE_STATUSES
from app.schedule import pricing
from app.schedule.forecasts import Forecasts
from app.schedule.model import ALL_SIZES, SAMPLE_WINDOW
from app.schedule.repository import CompletionRepository, ForecastRepository

log = get_logger("pollhook.forecasts")


class ForecastRefresher:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        forecasts: Forecasts,
        requests_per_success: Mapping[str, int],
    ) -> None:
        """`requests_per_success`: per instance, the follow-up requests one completion costs
        beyond its status polls (its adapter's: 1 for MiniMax's file retrieve, 0 for Jimmy)."""
        self.settings = settings
        self.sessions = sessions
        self.forecasts = forecasts
        self.requests_per_success = requests_per_success

    async def refresh(self) -> None:
        """Relearn the completion models and forecast each instance's demand (one replica
        per period does it for all), then reload this process's copy.

        The two parts fail apart: a refresh that fails (a slow database at scale, say)
        must not also freeze this process's copy at its last hit chance."""
        try:
            async with self.sessions.begin() as session:
                completions = CompletionRepository(session)
                forecasts = ForecastRepository(session)
                # The lock keeps two replicas from running at once; the freshness check
                # keeps N replicas from each running it once per period.
                if await completions.try_lead(
                    "pollhook:forecast"
                ) and not await forecasts.forecast_is_fresh(
                    self.settings.engine.model_refresh_s / 2
                ):
                    await completions.refresh_profiles(window=SAMPLE_WINDOW, all_sizes=ALL_SIZES)
                    await completions.prune_samples(window=SAMPLE_WINDOW)
                    # Plan with the models just learned, not this process's older copy.
                    learned = Forecasts(ttl_s=0)
                    learned.load(await completions.profiles(), {}, time.monotonic())
                    await self._forecast_demand(
                        forecasts,
                        BudgetRepository(session),
                        await completions.recent_completions_per_s(
                            self.settings.engine.forecast_window_s, kept=SAMPLE_WINDOW
                        ),
                        learned,
                    )
        except Exception as exc:  # the previous forecast stays in force
            log.warning("forecast_refresh_failed", error=type(exc).__name__, detail=str(exc)[:300])
        try:
            async with self.sessions.begin() as session:
                await self.forecasts.reload(session)
        except Exception as exc:
            log.warning("forecast_reload_failed", error=type(exc).__name__, detail=str(exc)[:300])

    async def _forecast_demand(
        self,
        forecasts: ForecastRepository,
        budgets: BudgetRepository,
        completions_per_s: dict[str, dict[int | None, float]],
        learned: Forecasts,
    ) -> None:
        active = await forecasts.active_tasks()
        overdue = await forecasts.due_backlog(self.settings.providers)
        current = await budgets.states(
            self.settings.providers, recovery_s=self.settings.engine.rate_recovery_s
        )
        for name, provider in self.settings.providers.items():
            state = current.get(name)
            rate = (
                (state.effective_rate_per_s if state else provider.rate_limit_per_s)
                if provider.rate_limit_per_s > 0
                else 0.0
            )
            # Pure but not free (a plan walk per size class and candidate hit chance):
            # off the event loop, whose send slots allow a few milliseconds of lateness.
            made = await asyncio.to_thread(
                partial(
                    pricing.forecast_instance,
                    provider,
                    rate_per_s=rate,
                    completions_per_s=completions_per_s.get(name, {}),
                    model_for_class=partial(learned.model_for_class, name),
                    planned=active.planned.get(name, []),
                    overdue=overdue.get(name, 0),
                    follow_ups_per_success=self.requests_per_success[name],
                    drain_s=self.settings.engine.backlog_drain_s,
                )
            )
            forecast = made.saturation
            await forecasts.record_forecast(
                name,
                demand_per_s=forecast.demand_per_s,
                capacity_per_s=made.capacity_per_s,
                hit_chance=forecast.hit_chance,
                active_tasks=made.active_tasks,
                tasks_by_status=active.by_status.get(name, dict.fromkeys(ACTIVE_STATUSES, 0)),
                expected_delay_s=forecast.expected_detection_delay_s,
                saturated=forecast.ratio > 1.0,
            )
