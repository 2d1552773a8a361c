from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive.repository import ArchiveRepository
from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.logging import get_logger
from app.core.metrics import SHARED_STATE, ProviderSnapshot, SharedSnapshot
from app.models import ProviderHealth
from app.schedule.repository import ForecastRepository
from app.webhooks.repository import WebhookRepository

log = get_logger("pollhook.metrics")

# How many forecast periods (`engine.model_refresh_s`) old the stored task counts may be.
STALE_FORECAST_PERIODS = 3


async def refresh_shared_state(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Read the shared state for the next scrapes. When it cannot be read, the scrape leaves
    it out (the process's own counters still go out): stale or zeroed gauges would pass
    for a measurement."""
    try:
        async with sessions() as session:
            SHARED_STATE.snapshot = await read_shared_state(session, settings)
    except Exception as exc:
        SHARED_STATE.snapshot = None
        log.warning("metrics_refresh_failed", error=type(exc).__name__)


async def read_shared_state(session: AsyncSession, settings: Settings) -> SharedSnapshot:
    """What the metrics say about state shared by all replicas, read from Postgres."""
    depth, oldest = await WebhookRepository(session).queue_stats()
    forecasts = ForecastRepository(session)
    backlog = await forecasts.due_backlog(settings.providers)
    stored = await forecasts.stored()
    states = await BudgetRepository(session).states(
        settings.providers, recovery_s=settings.engine.rate_recovery_s
    )
    # Counts from a forecast that stopped being refreshed (no worker runs, or every refresh
    # fails) would pass for current ones: past three periods they are left out.
    stale_after_s = STALE_FORECAST_PERIODS * settings.engine.model_refresh_s
    snapshots = []
    for name, provider in sorted(settings.providers.items()):
        state = states.get(name)
        forecast = stored.get(name)
        capacity = forecast.capacity_per_s if forecast else None
        demand = forecast.demand_per_s if forecast else None
        snapshots.append(
            ProviderSnapshot(
                name=name,
                configured_rate_per_s=provider.rate_limit_per_s,
                due_backlog=backlog.get(name, 0),
                tasks_by_status=(
                    forecast.tasks_by_status
                    if forecast is not None
                    and forecast.age_s is not None
                    and forecast.age_s <= stale_after_s
                    else None
                ),
                forecast_age_s=forecast.age_s if forecast else None,
                effective_rate_per_s=state.effective_rate_per_s if state else None,
                healthy=state.health is ProviderHealth.OK if state else None,
                poll_demand_ratio=demand / capacity if demand is not None and capacity else None,
                expected_detection_delay_s=(
                    forecast.expected_detection_delay_s if forecast else None
                ),
            )
        )
    archive_pending, oldest_archive = await ArchiveRepository(session).backlog()
    return SharedSnapshot(
        delivery_queue_depth=depth,
        oldest_pending_delivery_s=oldest,
        providers=snapshots,
        archive_pending=archive_pending,
        oldest_pending_archive_s=oldest_archive,
    )
