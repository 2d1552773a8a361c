from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CompletionProfile, CompletionSample, Task
from app.models.task import ACTIVE_STATUSES
from app.polling.policy import PERCENTILES
from app.providers.base import WaitReason


@dataclass(frozen=True)
class Claim:
    """A task this replica holds: it may write an outcome only while `token` still matches."""

    id: uuid.UUID
    token: int
    external_id: str
    status: str
    deadline_at: datetime
    claimed_at: datetime
    # The adapter's progress from earlier polls (PollContext.checkpoint).
    checkpoint: dict[str, Any] | None = None


class PollingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim_due(
        self, provider: str, *, limit: int, owner: str, lease_s: float
    ) -> list[Claim]:
        """Claim up to `limit` due tasks of one instance, longest overdue first.

        The claim moves `next_poll_at` to the lease's end: a replica that dies mid-poll
        needs no reaper, its tasks simply fall due again when the lease runs out. The new
        fencing token voids any older holder's write. SKIP LOCKED lets replicas claim side by
        side without waiting on each other; the partial index ix_tasks_due serves the scan.
        """
        rows = await self.session.execute(
            text(
                """
                WITH params AS (SELECT CAST(:lease_s AS float8) AS lease_s),
                due AS (
                    SELECT id FROM tasks
                    WHERE provider = :provider
                      AND status IN ('pending', 'queued', 'processing')
                      AND next_poll_at <= now()
                    ORDER BY next_poll_at
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE tasks t
                SET lease_owner = :owner,
                    lease_expires_at = now() + make_interval(secs => params.lease_s),
                    next_poll_at = now() + make_interval(secs => params.lease_s),
                    fencing_token = t.fencing_token + 1
                FROM due, params WHERE t.id = due.id
                RETURNING t.id, t.fencing_token, t.external_id, t.status, t.deadline_at,
                          t.checkpoint, now()
                """
            ),
            {"provider": provider, "limit": limit, "owner": owner, "lease_s": lease_s},
        )
        return [
            Claim(
                id=r.id,
                token=r.fencing_token,
                external_id=r.external_id,
                status=r.status,
                deadline_at=r.deadline_at,
                claimed_at=r.now,
                checkpoint=r.checkpoint,
            )
            for r in rows
        ]

    async def lock_if_held(self, claim: Claim) -> Task | None:
        """The task, row-locked, if our claim still holds; None if we lost it."""
        stmt = (
            select(Task)
            .where(Task.id == claim.id, Task.fencing_token == claim.token)
            .with_for_update()
        )
        task: Task | None = await self.session.scalar(stmt)
        return task

    async def release(self, claims: list[Claim], *, next_poll_at: datetime | None = None) -> int:
        """Give claimed tasks back without an outcome (shutdown, missed budget slot)."""
        if not claims:
            return 0
        result = await self.session.execute(
            update(Task)
            .where(
                tuple_(Task.id, Task.fencing_token).in_([(c.id, c.token) for c in claims]),
                Task.status.in_(ACTIVE_STATUSES),
            )
            .values(
                lease_owner=None,
                lease_expires_at=None,
                next_poll_at=next_poll_at if next_poll_at is not None else func.now(),
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def save_checkpoint(self, claim: Claim, checkpoint: dict[str, Any] | None) -> None:
        """Keep an adapter's progress from a poll that ends without a result to apply
        (its slot was missed, the replica is stopping), if the claim still holds."""
        await self.session.execute(
            update(Task)
            .where(
                Task.id == claim.id,
                Task.fencing_token == claim.token,
                Task.status.in_(ACTIVE_STATUSES),
            )
            .values(checkpoint=checkpoint)
            .execution_options(synchronize_session=False)
        )

    async def resume_parked(self, providers: list[str]) -> int:
        """Make due now the tasks that wait out a credential error of these instances (after
        a restart with another key): they would otherwise sit out engine.auth_retry_s.
        Tasks another replica holds are left to it."""
        if not providers:
            return 0
        result = await self.session.execute(
            update(Task)
            .where(
                Task.provider.in_(providers),
                Task.status.in_(ACTIVE_STATUSES),
                Task.lease_owner.is_(None),
                Task.next_poll_at > func.now(),
                or_(
                    Task.poll_error["reason"].astext == WaitReason.AUTH_FAILED.value,
                    # Parked by the previous version, which wrote only this column.
                    Task.last_poll_error.startswith("CredentialError:"),
                ),
            )
            .values(next_poll_at=func.now())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def seconds_until_due(self, provider: str) -> float | None:
        """How long until the instance's next task falls due (database clock); None if idle."""
        stmt = select(func.extract("epoch", func.min(Task.next_poll_at) - func.now())).where(
            Task.provider == provider, Task.status.in_(ACTIVE_STATUSES)
        )
        value = await self.session.scalar(stmt)
        return float(value) if value is not None else None


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

    async def add_sample(self, provider: str, size_class: int | None, duration_s: float) -> None:
        self.session.add(
            CompletionSample(provider=provider, size_class=size_class, duration_s=duration_s)
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
