"""What the schedule learns and forecasts, kept in Postgres so every replica and every
restart shares it: completion samples and their percentiles, and each instance's forecast
(demand, capacity, the hit chance its budget calls for) on its `provider_state` row."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import rows_of, rows_param
from app.models import CompletionProfile, CompletionSample, ProviderState
from app.models.task import ACTIVE_SQL, ACTIVE_STATUSES
from app.schedule.model import PERCENTILES


@dataclass(frozen=True)
class Sample:
    """One finished task's completion age, in its instance and size class."""

    provider: str
    size_class: int | None
    duration_s: float


_SAMPLE_ROWS = rows_of(CompletionSample.__table__, ["provider", "size_class", "duration_s"])


@dataclass(frozen=True)
class ProfileRow:
    provider: str
    size_class: int
    samples: int
    quantiles: list[float]


class CompletionRepository:
    """The learned completion times: samples in, percentiles out, all in Postgres so every
    replica and every restart shares them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_samples(self, samples: list[Sample]) -> None:
        """Record finished tasks' completion ages, one statement for the set."""
        if not samples:
            return
        await self.session.execute(
            text(
                f"""
                INSERT INTO completion_samples (provider, size_class, duration_s)
                SELECT provider, size_class, duration_s FROM {_SAMPLE_ROWS}
                """
            ),
            {"rows": rows_param(asdict(sample) for sample in samples)},
        )

    async def refresh_profiles(self, *, window: int, all_sizes: int) -> None:
        """Recompute the percentiles of each instance (size_class = `all_sizes`) and of each
        of its size classes over their most recent `window` samples, in one statement."""
        await self.session.execute(
            text(
                """
                WITH ranked AS (
                    SELECT provider, size_class, duration_s,
                           row_number() OVER (PARTITION BY provider, size_class
                                              ORDER BY id DESC) AS in_class,
                           row_number() OVER (PARTITION BY provider ORDER BY id DESC) AS in_all
                    FROM completion_samples
                ), profiles AS (
                    SELECT provider, size_class, count(*) AS n,
                           percentile_cont(CAST(:points AS float8[]))
                               WITHIN GROUP (ORDER BY duration_s) AS q
                    FROM ranked WHERE size_class IS NOT NULL AND in_class <= :window
                    GROUP BY provider, size_class
                    UNION ALL
                    SELECT provider, :all_sizes, count(*),
                           percentile_cont(CAST(:points AS float8[]))
                               WITHIN GROUP (ORDER BY duration_s)
                    FROM ranked WHERE in_all <= :window
                    GROUP BY provider
                )
                INSERT INTO completion_profiles (provider, size_class, samples, quantiles,
                                                 refreshed_at)
                SELECT provider, size_class, n, q, now() FROM profiles
                ON CONFLICT (provider, size_class) DO UPDATE
                SET samples = excluded.samples, quantiles = excluded.quantiles,
                    refreshed_at = excluded.refreshed_at
                """
            ),
            {"points": list(PERCENTILES), "window": window, "all_sizes": all_sizes},
        )

    async def prune_samples(self, *, window: int) -> int:
        """Drop samples that no profile uses any more (outside both windows)."""
        result = await self.session.execute(
            text(
                """
                DELETE FROM completion_samples WHERE id IN (
                    SELECT id FROM (
                        SELECT id,
                               row_number() OVER (PARTITION BY provider, size_class
                                                  ORDER BY id DESC) AS in_class,
                               row_number() OVER (PARTITION BY provider
                                                  ORDER BY id DESC) AS in_all
                        FROM completion_samples
                    ) ranked
                    WHERE in_class > :window AND in_all > :window
                )
                """
            ),
            {"window": window},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def recent_completions_per_s(
        self, window_s: float, *, kept: int
    ) -> dict[str, dict[int | None, float]]:
        """Completions per second over the last `window_s`, per instance and size class
        (None: tasks registered without a size_hint).

        Pruning keeps only the `kept` most recent samples of an instance: when all of those
        are younger than `window_s`, the rate is what they span, not what is left of the
        window."""
        rows = await self.session.execute(
            text(
                """
                SELECT provider, size_class,
                       count(*) FILTER (WHERE observed_at > now()
                           - make_interval(secs => CAST(:window_s AS float8))) AS recent,
                       count(*) AS n,
                       min(min(observed_at)) OVER (PARTITION BY provider) AS oldest,
                       now() AS now
                FROM (
                    SELECT provider, size_class, observed_at,
                           row_number() OVER (PARTITION BY provider ORDER BY id DESC) AS rank
                    FROM completion_samples
                ) ranked
                WHERE rank <= :kept
                GROUP BY provider, size_class
                """
            ),
            {"window_s": window_s, "kept": kept},
        )
        by_provider: dict[str, list[Any]] = {}
        for row in rows:
            by_provider.setdefault(row.provider, []).append(row)
        rates: dict[str, dict[int | None, float]] = {}
        for provider, classes in by_provider.items():
            n = sum(int(row.n) for row in classes)
            recent = sum(int(row.recent) for row in classes)
            if n >= kept and recent == n:
                span = max((classes[0].now - classes[0].oldest).total_seconds(), 1e-3)
                rates[provider] = {row.size_class: int(row.n) / span for row in classes}
            else:
                rates[provider] = {
                    row.size_class: int(row.recent) / window_s for row in classes if row.recent
                }
        return rates

    async def profiles(self) -> list[ProfileRow]:
        rows = await self.session.execute(select(CompletionProfile))
        return [
            ProfileRow(p.provider, p.size_class, p.samples, list(p.quantiles))
            for p in rows.scalars()
        ]

    async def try_lead(self, key: str) -> bool:
        """Whether this transaction is the one replica doing `key`'s shared work now."""
        value = await self.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": key}
        )
        return bool(value)


@dataclass(frozen=True)
class StoredForecast:
    """An instance's forecast (`app/schedule/pricing.py` `saturation`), as one replica last
    refreshed it."""

    demand_per_s: float
    capacity_per_s: float | None
    # The hit chance the budget calls for (None: the instance's poll_hit_chance).
    hit_chance: float | None
    active_tasks: int | None
    expected_detection_delay_s: float | None
    saturated_since: datetime | None
    # The count of each active status (None: written by the previous version).
    tasks_by_status: dict[str, int] | None
    # Seconds since it was made, on the database clock (None: no time recorded).
    age_s: float | None


@dataclass(frozen=True)
class ActiveTasks:
    # Per instance: (planned interval, task count) pairs, for the demand forecast.
    planned: dict[str, list[tuple[float, int]]]
    # Per instance: the count of each active status, every one present.
    by_status: dict[str, dict[str, int]]


class ForecastRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def stored(self) -> dict[str, StoredForecast]:
        """Each instance's last forecast, where one was made."""
        rows = await self.session.execute(
            select(
                ProviderState.name,
                ProviderState.poll_demand_per_s,
                ProviderState.poll_capacity_per_s,
                ProviderState.poll_hit_chance,
                ProviderState.active_tasks,
                ProviderState.expected_detection_delay_s,
                ProviderState.saturated_since,
                ProviderState.tasks_by_status,
                func.extract("epoch", func.clock_timestamp() - ProviderState.forecast_at).label(
                    "age_s"
                ),
            ).where(ProviderState.poll_demand_per_s.is_not(None))
        )
        return {
            row.name: StoredForecast(
                demand_per_s=row.poll_demand_per_s,
                capacity_per_s=row.poll_capacity_per_s,
                hit_chance=row.poll_hit_chance,
                active_tasks=row.active_tasks,
                expected_detection_delay_s=row.expected_detection_delay_s,
                saturated_since=row.saturated_since,
                tasks_by_status=row.tasks_by_status,
                age_s=None if row.age_s is None else float(row.age_s),
            )
            for row in rows
        }

    async def record_forecast(
        self,
        name: str,
        *,
        demand_per_s: float,
        capacity_per_s: float,
        hit_chance: float,
        active_tasks: int,
        tasks_by_status: dict[str, int],
        expected_delay_s: float | None,
        saturated: bool,
    ) -> None:
        """Store an instance's forecast; `saturated_since` keeps the start of a saturated
        spell across refreshes and clears when demand fits the rate again."""
        await self.session.execute(
            update(ProviderState)
            .where(ProviderState.name == name)
            .values(
                poll_demand_per_s=demand_per_s,
                poll_capacity_per_s=capacity_per_s,
                poll_hit_chance=hit_chance,
                active_tasks=active_tasks,
                tasks_by_status=tasks_by_status,
                expected_detection_delay_s=expected_delay_s,
                saturated_since=(
                    func.coalesce(ProviderState.saturated_since, func.clock_timestamp())
                    if saturated
                    else None
                ),
                forecast_at=func.clock_timestamp(),
            )
        )

    async def active_tasks(self) -> ActiveTasks:
        """One scan of the active tasks: per instance, their planned intervals as (interval,
        count) pairs grouped to within 5 % (a few hundred rows however many tasks are
        active), and how many are in each active status."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT provider, status,
                       CASE WHEN poll_interval_s > 0
                            THEN round(ln(poll_interval_s) * 20) END AS bucket,
                       sum(poll_interval_s) AS planned_s, count(*) AS n
                FROM tasks
                WHERE {ACTIVE_SQL}
                GROUP BY provider, status, bucket
                """
            )
        )
        by_status: dict[str, dict[str, int]] = {}
        buckets: dict[str, dict[float, tuple[float, int]]] = {}
        for row in rows:
            counts = by_status.setdefault(row.provider, dict.fromkeys(ACTIVE_STATUSES, 0))
            counts[row.status] += row.n
            if row.bucket is not None:
                planned = buckets.setdefault(row.provider, {})
                seconds, n = planned.get(row.bucket, (0.0, 0))
                planned[row.bucket] = (seconds + float(row.planned_s), n + int(row.n))
        return ActiveTasks(
            planned={
                provider: [(seconds / n, n) for seconds, n in planned.values()]
                for provider, planned in buckets.items()
            },
            by_status=by_status,
        )

    async def forecast_is_fresh(self, within_s: float) -> bool:
        """Whether some replica made the forecast within the last `within_s`."""
        value = await self.session.scalar(
            select(
                func.max(ProviderState.forecast_at)
                > func.clock_timestamp() - timedelta(seconds=within_s)
            )
        )
        return bool(value)

    async def hit_chances(self) -> dict[str, float]:
        """The hit chance each instance's budget calls for, where a forecast set one."""
        rows = await self.session.execute(
            select(ProviderState.name, ProviderState.poll_hit_chance).where(
                ProviderState.poll_hit_chance.is_not(None)
            )
        )
        return {name: float(chance) for name, chance in rows if chance is not None}

    async def active_of_tenant(
        self, tenant: str, providers: Collection[str]
    ) -> dict[str, dict[str, int]]:
        """One tenant's tracked tasks per instance, by status: a range scan of
        `ix_tasks_due_tenant` per instance, over that tenant's active tasks only."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT p.name, t.status, count(*)
                FROM unnest(CAST(:names AS text[])) AS p(name)
                CROSS JOIN LATERAL (
                    SELECT status FROM tasks
                    WHERE provider = p.name AND tenant = :tenant AND {ACTIVE_SQL}
                ) AS t
                GROUP BY p.name, t.status
                """
            ),
            {"names": sorted(providers), "tenant": tenant},
        )
        counts: dict[str, dict[str, int]] = {}
        for provider, status, count in rows:
            counts.setdefault(provider, {})[status] = int(count)
        return counts

    async def due_backlog(self, providers: Collection[str]) -> dict[str, int]:
        """Active tasks whose next poll is due now, per instance named. One range scan of
        `ix_tasks_due` per instance, over its due entries only: grouped by provider instead,
        the count walks every active task's entry."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT p.name,
                       (SELECT count(*) FROM tasks
                        WHERE provider = p.name AND {ACTIVE_SQL} AND next_poll_at <= now())
                FROM unnest(CAST(:names AS text[])) AS p(name)
                """
            ),
            {"names": sorted(providers)},
        )
        return {provider: int(count) for provider, count in rows}
