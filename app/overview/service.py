"""The dashboard's overview, and GET /v1/overview: tasks by status, activity over the last
minute and hour, the detection gap's and delivery latency's distributions, and per
instance its budget, rate, saturation and health.

For operators only: every figure here is instance-wide, over every tenant. A tenant sees its
own tasks per instance in `GET /v1/providers` (`your_active_tasks`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import Caller
from app.core.config import Settings
from app.core.errors import Forbidden
from app.core.metrics import DELIVERY_LATENCY_BUCKETS, DETECTION_GAP_BUCKETS
from app.overview import distributions
from app.overview.repository import COUNTERS, ActivityRepository, Counts, Minute
from app.overview.schemas import (
    Bucket,
    Distribution,
    InstanceActivity,
    MinuteActivity,
    Overview,
)
from app.providers.service import ProviderService

WINDOW_MINUTES = 60
RATE_WINDOW_S = 60.0


class OverviewService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.activity = ActivityRepository(session)
        self.providers = ProviderService(session, settings)

    async def overview(self, caller: Caller) -> Overview:
        if not caller.is_operator:
            raise Forbidden(
                "the overview is instance-wide, for operators; a tenant's own tasks per "
                "instance are in GET /v1/providers"
            )
        listed = (await self.providers.list(caller)).items
        recent = await self.activity.recent(RATE_WINDOW_S)
        minutes = await self.activity.per_minute(WINDOW_MINUTES)
        gap, latency = await self.activity.buckets(WINDOW_MINUTES)
        now = await self.activity.now()
        deliveries = recent.get(None, Counts())
        active: Counter[str] = Counter()
        instances = []
        for provider in listed:
            if provider.saturation is not None and provider.saturation.tasks_by_status:
                active.update(provider.saturation.tasks_by_status)
            polls_per_s = recent.get(provider.name, Counts()).polls / RATE_WINDOW_S
            rate = provider.effective_rate_per_s
            instances.append(
                InstanceActivity(
                    provider=provider,
                    polls_per_s=round(polls_per_s, 3),
                    budget_used=round(polls_per_s / rate, 3) if rate else None,
                )
            )
        attempts = deliveries.delivered + deliveries.delivery_retries
        attempts += deliveries.delivery_failures
        return Overview(
            at=now,
            window_minutes=WINDOW_MINUTES,
            active_tasks=dict(sorted(active.items())),
            polls_per_s=round(sum(c.polls for c in recent.values()) / RATE_WINDOW_S, 3),
            deliveries_per_s=round(attempts / RATE_WINDOW_S, 3),
            delivered_per_s=round(deliveries.delivered / RATE_WINDOW_S, 3),
            minutes=_every_minute(minutes, now),
            detection_gap=_distribution(DETECTION_GAP_BUCKETS, gap),
            delivery_latency=_distribution(DELIVERY_LATENCY_BUCKETS, latency),
            instances=instances,
        )


def _every_minute(rows: Sequence[Minute], now: datetime) -> list[MinuteActivity]:
    """The window's minutes, oldest first, each summed over instances; a quiet minute is a
    row of zeros, so a chart's time axis has no holes."""
    current = now.replace(second=0, microsecond=0)
    start = current - timedelta(minutes=WINDOW_MINUTES - 1)
    sums = {start + timedelta(minutes=i): Counter[str]() for i in range(WINDOW_MINUTES)}
    for row in rows:
        if row.minute in sums:
            sums[row.minute].update({c: getattr(row.counts, c) for c in COUNTERS})
    return [
        MinuteActivity(minute=minute, **{c: counted.get(c, 0) for c in COUNTERS})
        for minute, counted in sums.items()
    ]


def _distribution(bounds: Sequence[float], summed: Sequence[int]) -> Distribution:
    # Rows of another version with more buckets (or none yet) come out longer or shorter:
    # read as many as this version has.
    counts = [*summed[: len(bounds) + 1], *[0] * (len(bounds) + 1 - len(summed))]

    def q(p: float) -> float | None:
        value = distributions.quantile(p, bounds, counts)
        return None if value is None else round(value, 3)

    return Distribution(
        count=sum(counts),
        p50_s=q(0.5),
        p90_s=q(0.9),
        p99_s=q(0.99),
        buckets=[
            Bucket(le_s=float(bounds[i]) if i < len(bounds) else None, count=count)
            for i, count in enumerate(counts)
        ],
    )
