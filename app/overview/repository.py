"""The `activity` table's SQL: what worker processes did, a row per process, instance and
few seconds. Every read is bounded by time and served by ix_activity_at, so it costs the
same whatever the number of tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Activity


@dataclass(frozen=True)
class Counts:
    """What happened in one stretch of time: a row's deltas, or the sum of rows."""

    polls: int = 0
    poll_errors: int = 0
    succeeded: int = 0
    failed: int = 0
    delivered: int = 0
    delivery_retries: int = 0
    delivery_failures: int = 0
    detection_gap: list[int] = field(default_factory=list)
    delivery_latency: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.polls,
                self.succeeded,
                self.failed,
                self.delivered,
                self.delivery_retries,
                self.delivery_failures,
                any(self.detection_gap),
                any(self.delivery_latency),
            )
        )


# Summed per minute and instance: the counters only; buckets are summed over a window.
COUNTERS = [
    "polls",
    "poll_errors",
    "succeeded",
    "failed",
    "delivered",
    "delivery_retries",
    "delivery_failures",
]


@dataclass(frozen=True)
class Minute:
    minute: datetime
    # None: the deliveries, which belong to no instance.
    provider: str | None
    counts: Counts


class ActivityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, process: str, rows: Sequence[tuple[str | None, Counts]]) -> None:
        """One statement for the rows of one interval."""
        if rows:
            await self.session.execute(
                insert(Activity),
                [
                    {
                        "process": process,
                        "provider": provider,
                        **{name: getattr(counts, name) for name in COUNTERS},
                        "detection_gap": counts.detection_gap,
                        "delivery_latency": counts.delivery_latency,
                    }
                    for provider, counts in rows
                ],
            )

    async def now(self) -> datetime:
        """The database clock, which stamps every row."""
        now: datetime = (await self.session.execute(text("SELECT now()"))).scalar_one()
        return now

    async def prune(self, keep_s: float) -> int:
        result = await self.session.execute(
            text(
                "DELETE FROM activity"
                " WHERE at < now() - make_interval(secs => CAST(:keep_s AS float8))"
            ),
            {"keep_s": keep_s},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def per_minute(self, minutes: int) -> list[Minute]:
        """Per minute and instance, summed over processes: this minute and the `minutes` - 1
        before it, oldest first; minutes and instances with no rows are left out."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT date_trunc('minute', at) AS minute, provider,
                       {", ".join(f"sum({c})::bigint AS {c}" for c in COUNTERS)}
                FROM activity
                WHERE at >= date_trunc('minute', now()) - make_interval(mins => :before)
                GROUP BY 1, 2
                ORDER BY 1, 2 NULLS FIRST
                """
            ),
            {"before": minutes - 1},
        )
        return [Minute(r.minute, r.provider, _counts(r)) for r in rows]

    async def recent(self, seconds: float) -> dict[str | None, Counts]:
        """Per instance, summed over processes: the rows of the last `seconds`."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT provider, {", ".join(f"sum({c})::bigint AS {c}" for c in COUNTERS)}
                FROM activity
                WHERE at >= now() - make_interval(secs => CAST(:seconds AS float8))
                GROUP BY provider
                """
            ),
            {"seconds": seconds},
        )
        return {r.provider: _counts(r) for r in rows}

    async def buckets(self, minutes: int) -> tuple[list[int], list[int]]:
        """The detection gap's and the delivery latency's bucket counts over the last
        `minutes`, summed element by element over every row."""
        rows = await self.session.execute(
            text(
                """
                SELECT u.i, sum(u.gap)::bigint AS gap, sum(u.latency)::bigint AS latency
                FROM activity a,
                     unnest(a.detection_gap, a.delivery_latency) WITH ORDINALITY
                         AS u(gap, latency, i)
                WHERE a.at >= now() - make_interval(mins => :minutes)
                GROUP BY u.i
                ORDER BY u.i
                """
            ),
            {"minutes": minutes},
        )
        gap: list[int] = []
        latency: list[int] = []
        for row in rows:
            gap.append(int(row.gap or 0))
            latency.append(int(row.latency or 0))
        return gap, latency


def _counts(row: Any) -> Counts:
    return Counts(
        polls=int(row.polls),
        poll_errors=int(row.poll_errors),
        succeeded=int(row.succeeded),
        failed=int(row.failed),
        delivered=int(row.delivered),
        delivery_retries=int(row.delivery_retries),
        delivery_failures=int(row.delivery_failures),
    )
