"""The learned forecast as one process sees it: completion models and budget stretches,
cached in memory and reloaded from Postgres (where one replica refreshes them)."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.logging import get_logger
from app.polling import policy
from app.polling.repository import CompletionRepository, ProfileRow
from app.providers.repository import ProviderStateRepository

log = get_logger("pollhook.forecasts")


class Forecasts:
    """This process's copy of the learned completion models and each instance's budget
    stretch, reloaded from Postgres at most every `ttl_s` (the engine's model_refresh_s).

    Only usable models are kept: an instance's own once it has MIN_SAMPLES completions, a
    size class's once that class has as many.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.models: dict[tuple[str, int], policy.CompletionModel] = {}
        self.stretch: dict[str, float] = {}
        self.loaded_at: float | None = None

    def model_for(self, provider: str, size_hint: int | None) -> policy.CompletionModel | None:
        size_class = policy.size_class(size_hint)
        if size_class is not None and (model := self.models.get((provider, size_class))):
            return model
        return self.models.get((provider, policy.ALL_SIZES))

    def stretch_for(self, provider: str) -> float:
        return self.stretch.get(provider, 1.0)

    def load(self, rows: list[ProfileRow], stretch: dict[str, float], at: float) -> None:
        self.models = {
            (row.provider, row.size_class): model
            for row in rows
            if (model := policy.CompletionModel.learned(row.quantiles, row.samples))
        }
        self.stretch = stretch
        self.loaded_at = at

    async def reload(self, session: AsyncSession) -> None:
        rows = await CompletionRepository(session).profiles()
        stretch = await ProviderStateRepository(session).stretches()
        self.load(rows, stretch, time.monotonic())

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
