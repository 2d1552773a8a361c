"""The learned forecast as one process sees it: completion models and the hit chance each
instance's budget calls for, cached in memory and reloaded from Postgres (where one replica
refreshes them)."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.logging import get_logger
from app.schedule.model import ALL_SIZES, CompletionModel, size_class
from app.schedule.repository import CompletionRepository, ForecastRepository, ProfileRow

log = get_logger("pollhook.forecasts")


class Forecasts:
    """This process's copy of the learned completion models and each instance's budgeted
    hit chance, reloaded from Postgres at most every `ttl_s` (the engine's model_refresh_s).

    Only usable models are kept: an instance's own once it has MIN_SAMPLES completions, a
    size class's once that class has as many.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.models: dict[tuple[str, int], CompletionModel] = {}
        self.hit_chance: dict[str, float] = {}
        self.loaded_at: float | None = None

    def model_for(self, provider: str, size_hint: int | None) -> CompletionModel | None:
        return self.model_for_class(provider, size_class(size_hint))

    def model_for_class(self, provider: str, size_class: int | None) -> CompletionModel | None:
        """The size class's model, or the instance's until the class has learned one."""
        if size_class is not None and (model := self.models.get((provider, size_class))):
            return model
        return self.models.get((provider, ALL_SIZES))

    def hit_chance_for(self, provider: str) -> float | None:
        """The hit chance the budget calls for; None: the instance's own."""
        return self.hit_chance.get(provider)

    def load(self, rows: list[ProfileRow], hit_chance: dict[str, float], at: float) -> None:
        self.models = {
            (row.provider, row.size_class): model
            for row in rows
            if (model := CompletionModel.learned(row.quantiles, row.samples))
        }
        self.hit_chance = hit_chance
        self.loaded_at = at

    async def reload(self, session: AsyncSession) -> None:
        rows = await CompletionRepository(session).profiles()
        hit_chance = await ForecastRepository(session).hit_chances()
        self.load(rows, hit_chance, time.monotonic())

    async def reload_if_stale(self, session: AsyncSession) -> None:
        now = time.monotonic()
        if self.loaded_at is None or now - self.loaded_at >= self.ttl_s:
            # Marked first: the requests that find the copy stale together reload it once.
            self.loaded_at = now
            try:
                await self.reload(session)
            except Exception as exc:
                # A registration must not fail for want of a fresher forecast.
                log.warning("forecast_reload_failed", error=type(exc).__name__)
