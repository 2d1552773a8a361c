from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import metrics
from app.core.config import Settings
from app.models import ProviderHealth
from app.providers.repository import ProviderStateRepository
from app.webhooks.repository import WebhookRepository


async def refresh_shared_gauges(session: AsyncSession, settings: Settings) -> None:
    """Set the gauges that describe state shared by all replicas from Postgres."""
    depth, oldest = await WebhookRepository(session).queue_stats()
    metrics.QUEUE_DEPTH.set(depth)
    metrics.OLDEST_PENDING.set(oldest or 0.0)
    providers = ProviderStateRepository(session)
    backlog = await providers.due_backlog()
    states = await providers.states(settings.providers, recovery_s=settings.engine.rate_recovery_s)
    for name, provider in settings.providers.items():
        metrics.DUE_BACKLOG.labels(name).set(backlog.get(name, 0))
        metrics.CONFIGURED_RATE.labels(name).set(provider.rate_limit_per_s)
        state = states.get(name)
        metrics.EFFECTIVE_RATE.labels(name).set(
            state.effective_rate_per_s if state else provider.rate_limit_per_s
        )
        metrics.POLL_DEMAND_RATIO.labels(name).set(
            (state.poll_demand_per_s or 0.0) / state.poll_capacity_per_s
            if state and state.poll_capacity_per_s
            else 0.0
        )
        metrics.EXPECTED_DETECTION_DELAY.labels(name).set(
            (state.expected_detection_delay_s or 0.0) if state else 0.0
        )
        healthy = state is None or state.health is ProviderHealth.OK
        metrics.PROVIDER_UP.labels(name).set(1 if healthy else 0)
