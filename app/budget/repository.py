"""The shared rate budget's row: one `provider_state` row per provider instance.

Every replica takes its send slots from this row (GCRA: `next_slot_at` moves forward by
SPACING_FACTOR / rate per slot, and by the lateness a run booked where the next slots go to
another replica), cuts the rate on a rate-limit answer (AIMD), and pauses
the instance on rate-limit and credential answers. The database clock is the only clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.budget.capacity import MIN_RATE_SHARE, SPACING_FACTOR
from app.core.config import ProviderSettings
from app.models import ProviderHealth, ProviderState

# The rate in force now (AIMD): the configured rate, or since the last cut, the cut rate
# climbing back by the configured rate per recovery window. One definition for the
# reservation, the next cut and what /v1/providers reports; it reads the provider_state
# columns and a `params` row with `rate` and `recovery_s`.
_EFFECTIVE_RATE_SQL = """
    CASE
        WHEN rate_cut_at IS NULL OR effective_rate_per_s IS NULL THEN params.rate
        ELSE LEAST(params.rate, effective_rate_per_s + params.rate
                   * EXTRACT(EPOCH FROM clock_timestamp() - rate_cut_at) / params.recovery_s)
    END
"""


def key_fingerprint(settings: ProviderSettings) -> str:
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    return hashlib.sha256(f"{settings.base_url}\n{key}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reservation:
    """`count` send slots: the first at `first_slot`, then one every `spacing_s` seconds.

    `db_now` is the database clock when the slots were taken, to place them on a local
    clock without trusting the replica's wall time. `continues`: no other replica reserved
    since this one's previous reservation, so the slots extend its run; `run_late_s`: how
    much later than the slack the run's slots may be sent (booked in the row).
    """

    db_now: datetime
    first_slot: datetime
    spacing_s: float
    count: int
    effective_rate_per_s: float
    continues: bool
    run_late_s: float


@dataclass(frozen=True)
class BudgetState:
    """An instance's budget as the replicas share it: paused, healthy, how fast."""

    name: str
    paused_until: datetime | None
    health: ProviderHealth
    last_error: str | None
    last_error_at: datetime | None
    effective_rate_per_s: float
    # The end of the instance's reserved slots: how far ahead the replicas have booked it.
    next_slot_at: datetime | None
    db_now: datetime


class BudgetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure_rows(self, providers: Mapping[str, ProviderSettings]) -> list[str]:
        """One shared state row per configured instance; returns the instances whose key
        changed since their row was written.

        A row whose key fingerprint changed (a fixed key after auth_failed) starts afresh;
        otherwise the state other replicas built up (pause, rate cut) is kept.
        """
        rows = await self.session.execute(
            select(ProviderState.name, ProviderState.key_fingerprint)
            .where(ProviderState.name.in_(list(providers)))
            .with_for_update()
        )
        known = {name: fingerprint for name, fingerprint in rows}
        rekeyed = []
        for name, settings in providers.items():
            fingerprint = key_fingerprint(settings)
            if name in known and known[name] != fingerprint:
                rekeyed.append(name)
            stmt = insert(ProviderState).values(
                name=name, kind=settings.kind.value, key_fingerprint=fingerprint
            )
            changed = ProviderState.key_fingerprint.is_distinct_from(fingerprint)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "kind": stmt.excluded.kind,
                    "key_fingerprint": stmt.excluded.key_fingerprint,
                    "health": case((changed, ProviderHealth.OK.value), else_=ProviderState.health),
                    "paused_until": case((changed, None), else_=ProviderState.paused_until),
                    "last_error": case((changed, None), else_=ProviderState.last_error),
                    "updated_at": func.now(),
                },
            )
            await self.session.execute(stmt)
        return rekeyed

    async def clock(self) -> datetime:
        """The database clock, read by the shortest statement there is: a replica places
        slots on its own clock from when this was sent and when its answer came back."""
        now: datetime = (await self.session.execute(select(func.clock_timestamp()))).scalar_one()
        return now

    async def reserve(
        self,
        name: str,
        count: int,
        *,
        configured_rate: float,
        recovery_s: float,
        lead_s: float,
        run_next: datetime | None,
        late_s: float,
    ) -> Reservation:
        """Take `count` consecutive send slots from the instance's shared budget (GCRA).

        One statement on one row: concurrent replicas serialise on the row lock, each gets
        a disjoint run of slots, and the database clock is the only clock involved.

        `run_next` is where this replica's latest reservation left `next_slot_at`: if it
        still stands there, no other replica has reserved since, and these slots extend
        that run (`Reservation.continues`); the run's booked lateness only grows. Otherwise
        they start a new run `late_s` may be sent late, at least the lateness booked by
        the run before them after its end. On an idle budget the first slot is `lead_s`
        after the database's clock rather than at it: a slot at the moment the statement
        ran has gone by when its answer is read. `next_slot_at` only
        ever moves forward, but for `resume` moving it back over slots no replica can use.
        """
        row = (
            await self.session.execute(
                text(
                    f"""
                    WITH params AS (
                        SELECT CAST(:rate AS float8) AS rate,
                               CAST(:recovery_s AS float8) AS recovery_s,
                               CAST(:count AS int) AS n,
                               CAST(:factor AS float8) AS factor,
                               make_interval(secs => CAST(:lead_s AS float8)) AS lead,
                               CAST(:run_next AS timestamptz) AS run_next,
                               CAST(:late_s AS float8) AS late_s
                    ), cur AS (
                        SELECT name,
                               clock_timestamp() AS now,
                               {_EFFECTIVE_RATE_SQL} AS eff,
                               -- Any reservation moves next_slot_at on by a slot or more:
                               -- within half the closest spacing, nobody reserved since.
                               COALESCE(abs(EXTRACT(EPOCH FROM next_slot_at - params.run_next))
                                        < 0.5 * params.factor / params.rate, false) AS continues,
                               next_slot_at, run_late_s, paused_until
                        FROM provider_state, params
                        WHERE name = :name
                        FOR UPDATE OF provider_state
                    ), booked AS (
                        SELECT cur.*,
                               GREATEST(next_slot_at + CASE WHEN continues THEN interval '0'
                                            ELSE make_interval(secs => run_late_s) END,
                                        clock_timestamp() + params.lead,
                                        paused_until) AS start,
                               CASE WHEN continues THEN GREATEST(run_late_s, params.late_s)
                                    ELSE params.late_s END AS late
                        FROM cur, params
                    )
                    UPDATE provider_state p
                    SET next_slot_at = booked.start
                          + make_interval(secs => params.n * params.factor / booked.eff),
                        run_late_s = booked.late
                    FROM booked, params WHERE p.name = booked.name
                    RETURNING booked.now, booked.start, booked.eff, booked.continues, booked.late
                    """
                ),
                {
                    "name": name,
                    "count": count,
                    "rate": configured_rate,
                    "recovery_s": recovery_s,
                    "factor": SPACING_FACTOR,
                    "lead_s": lead_s,
                    "run_next": run_next,
                    "late_s": late_s,
                },
            )
        ).one()
        eff = float(row.eff)
        return Reservation(
            db_now=row.now,
            first_slot=row.start,
            spacing_s=SPACING_FACTOR / eff,
            count=count,
            effective_rate_per_s=eff,
            continues=bool(row.continues),
            run_late_s=float(row.late),
        )

    async def record_rate_limited(
        self,
        name: str,
        *,
        configured_rate: float,
        recovery_s: float,
        pause_s: float,
        message: str,
    ) -> None:
        """Halve the current effective rate (AIMD) and pause the instance for `pause_s`."""
        await self.session.execute(
            text(
                f"""
                WITH params AS (
                    SELECT CAST(:rate AS float8) AS rate,
                           CAST(:floor AS float8) AS floor,
                           CAST(:recovery_s AS float8) AS recovery_s,
                           CAST(:pause_s AS float8) AS pause_s
                )
                UPDATE provider_state SET
                    effective_rate_per_s = GREATEST(params.floor, 0.5 * {_EFFECTIVE_RATE_SQL}),
                    rate_cut_at = clock_timestamp(),
                    paused_until = GREATEST(COALESCE(paused_until, clock_timestamp()),
                                            clock_timestamp()
                                            + make_interval(secs => params.pause_s)),
                    health = CASE WHEN health = 'auth_failed' THEN health ELSE 'degraded' END,
                    last_error = :message,
                    last_error_at = clock_timestamp(),
                    updated_at = clock_timestamp()
                FROM params
                WHERE name = :name
                """
            ),
            {
                "name": name,
                "rate": configured_rate,
                "floor": configured_rate * MIN_RATE_SHARE,
                "recovery_s": recovery_s,
                "pause_s": pause_s,
                "message": message[:500],
            },
        )

    async def record_auth_failed(self, name: str, *, retry_s: float, message: str) -> None:
        await self.session.execute(
            update(ProviderState)
            .where(ProviderState.name == name)
            .values(
                health=ProviderHealth.AUTH_FAILED.value,
                paused_until=func.clock_timestamp() + timedelta(seconds=retry_s),
                last_error=message[:500],
                last_error_at=func.clock_timestamp(),
                updated_at=func.clock_timestamp(),
            )
        )

    async def record_healthy(self, name: str) -> None:
        """Back to ok after a good answer; a no-op (and no write) when already ok."""
        await self.session.execute(
            update(ProviderState)
            .where(
                ProviderState.name == name,
                ProviderState.health != ProviderHealth.OK.value,
            )
            .values(health=ProviderHealth.OK.value, updated_at=func.clock_timestamp())
        )

    async def pause(self, name: str, kind: str, *, for_s: float) -> datetime:
        """Pause the instance for `for_s` from now (an operator's pause); a longer pause in
        force (a Retry-After, a credential error's wait) stands. Returns the pause's end.

        An upsert: an instance no worker has started yet has no row, and its first worker
        keeps the pause (`ensure_rows` keeps the row's state unless the key changed)."""
        row = await self.session.execute(
            text(
                """
                INSERT INTO provider_state (name, kind, paused_until)
                VALUES (:name, :kind,
                        clock_timestamp() + make_interval(secs => CAST(:for_s AS float8)))
                ON CONFLICT (name) DO UPDATE SET
                    paused_until = GREATEST(provider_state.paused_until, excluded.paused_until),
                    updated_at = clock_timestamp()
                RETURNING paused_until
                """
            ),
            {"name": name, "kind": kind, "for_s": for_s},
        )
        until: datetime = row.scalar_one()
        return until

    async def resume(self, name: str, *, held_s: float) -> None:
        """End the instance's pause, whoever set it.

        Slots a replica reserved while the pause was in force start where the pause was to
        end (`reserve`): left there, the next claims would queue behind them until then. When
        that end is at least `held_s` (the poll lease, `poll_lease_s`) away, no replica will
        ever send on those slots (a slot later than its claim's lease is given up), so the
        booking moves earlier by what is left of the pause and the slots after it stay as far
        apart as they were booked. Closer to the end, a replica may still send on them: the
        booking stays, `next_slot_at` never moves back over a slot that can be used, and
        polling resumes at the pause's end, less than `held_s` away."""
        await self.session.execute(
            text(
                """
                UPDATE provider_state SET
                    next_slot_at = CASE
                        WHEN paused_until - clock_timestamp()
                                 >= make_interval(secs => CAST(:held_s AS float8))
                             AND next_slot_at > paused_until
                        THEN next_slot_at - (paused_until - clock_timestamp())
                        ELSE next_slot_at END,
                    paused_until = NULL,
                    updated_at = clock_timestamp()
                WHERE name = :name
                """
            ),
            {"name": name, "held_s": held_s},
        )

    async def states(
        self, configured: Mapping[str, ProviderSettings], *, recovery_s: float
    ) -> dict[str, BudgetState]:
        result: dict[str, BudgetState] = {}
        for name, settings in configured.items():
            row = (
                await self.session.execute(
                    text(
                        f"""
                        WITH params AS (
                            SELECT CAST(:rate AS float8) AS rate,
                                   CAST(:recovery_s AS float8) AS recovery_s
                        )
                        SELECT paused_until, health, last_error, last_error_at, next_slot_at,
                               {_EFFECTIVE_RATE_SQL} AS eff, clock_timestamp() AS now
                        FROM provider_state, params WHERE name = :name
                        """
                    ),
                    {"name": name, "rate": settings.rate_limit_per_s, "recovery_s": recovery_s},
                )
            ).one_or_none()
            if row is None:
                continue
            result[name] = BudgetState(
                name=name,
                paused_until=row.paused_until,
                health=ProviderHealth(row.health),
                last_error=row.last_error,
                last_error_at=row.last_error_at,
                effective_rate_per_s=float(row.eff),
                next_slot_at=row.next_slot_at,
                db_now=row.now,
            )
        return result
