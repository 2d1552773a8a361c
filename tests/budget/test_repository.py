"""The shared GCRA budget on a real Postgres: disjoint, evenly spaced slots across
concurrent reservers; AIMD cuts and recovery; pauses."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.capacity import SPACING_FACTOR
from app.budget.repository import BudgetRepository, Reservation
from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker

SETTINGS = ProviderSettings(
    kind=ProviderKind.MINIMAX_T2A,
    **{**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "rate_limit_per_s": 10.0},
)


async def _setup(engine: AsyncEngine) -> None:
    async with create_sessionmaker(engine).begin() as session:
        await BudgetRepository(session).ensure_rows({"mm": SETTINGS})


async def _reserve(
    engine: AsyncEngine,
    count: int,
    rate: float = 10.0,
    lead_s: float = 0.0,
    run_next: datetime | None = None,
    late_s: float = 0.0,
) -> Reservation:
    async with create_sessionmaker(engine).begin() as session:
        return await BudgetRepository(session).reserve(
            "mm",
            count,
            configured_rate=rate,
            recovery_s=60.0,
            lead_s=lead_s,
            run_next=run_next,
            late_s=late_s,
        )


def _slots(r: Reservation) -> list[float]:
    base = r.first_slot.timestamp()
    return [base + i * r.spacing_s for i in range(r.count)]


async def test_consecutive_reservations_are_spaced(engine: AsyncEngine) -> None:
    await _setup(engine)
    first = await _reserve(engine, 5)
    second = await _reserve(engine, 3)
    assert first.spacing_s == pytest.approx(SPACING_FACTOR / 10)
    assert first.first_slot >= first.db_now
    # The second run starts exactly where the first ended: no gap, no overlap.
    expected = first.first_slot + timedelta(seconds=5 * first.spacing_s)
    assert abs((second.first_slot - expected).total_seconds()) < 1e-5


async def test_an_idle_budget_starts_a_lead_after_its_clock_a_busy_one_where_it_stands(
    engine: AsyncEngine,
) -> None:
    """A slot at the moment the reservation ran would have gone by when its answer is read:
    an idle budget's first slot is the lead later. A booked one goes on where it stands."""
    await _setup(engine)
    idle = await _reserve(engine, 2, lead_s=0.25)
    assert (idle.first_slot - idle.db_now).total_seconds() >= 0.25
    booked = await _reserve(engine, 1, lead_s=0.01)
    expected = idle.first_slot + timedelta(seconds=2 * idle.spacing_s)
    assert abs((booked.first_slot - expected).total_seconds()) < 1e-5


def _next(r: Reservation) -> datetime:
    return r.first_slot + timedelta(seconds=r.count * r.spacing_s)


async def test_a_run_extends_while_nobody_else_reserves_and_the_next_starts_after_its_lateness(
    engine: AsyncEngine,
) -> None:
    """A replica's reservation extends its run when the row's next slot is still where its
    previous one left it, idle or not, and the run's booked lateness only grows; another
    replica's slots start that lateness after the run's end."""
    await _setup(engine)
    a1 = await _reserve(engine, 5, late_s=0.05)
    assert not a1.continues
    assert a1.run_late_s == pytest.approx(0.05)
    a2 = await _reserve(engine, 3, run_next=_next(a1), late_s=0.0)
    assert a2.continues
    assert a2.first_slot == _next(a1)
    assert a2.run_late_s == pytest.approx(0.05)  # booked for the whole run
    b = await _reserve(engine, 2, late_s=0.0)  # another replica
    assert not b.continues
    assert abs((b.first_slot - _next(a2)).total_seconds() - 0.05) < 1e-5
    a3 = await _reserve(engine, 1, run_next=_next(a2))  # b reserved in between
    assert not a3.continues
    assert abs((a3.first_slot - _next(b)).total_seconds()) < 1e-5  # b booked no lateness
    a4 = await _reserve(engine, 1, run_next=_next(a3), lead_s=2.0)  # gone idle meanwhile
    assert a4.continues
    assert (a4.first_slot - a4.db_now).total_seconds() >= 2.0


async def test_concurrent_reservers_never_share_a_window(engine: AsyncEngine) -> None:
    await _setup(engine)
    reservations = await asyncio.gather(*(_reserve(engine, 4) for _ in range(25)))
    slots = sorted(s for r in reservations for s in _slots(r))
    assert len(slots) == 100
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= SPACING_FACTOR / 10 - 1e-5
    # However the 100 slots are placed, no 1-second window holds more than the rate.
    right = 0
    for left, start in enumerate(slots):
        while right < len(slots) and slots[right] < start + 1.0:
            right += 1
        assert right - left <= 10


async def test_rate_limit_halves_and_pauses_then_recovers(engine: AsyncEngine) -> None:
    await _setup(engine)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        await BudgetRepository(session).record_rate_limited(
            "mm", configured_rate=10.0, recovery_s=60.0, pause_s=2.0, message="1002 rate limit"
        )
    reservation = await _reserve(engine, 1)
    # Paused: the first slot is at least ~2 s out; the rate is cut to about half.
    assert (reservation.first_slot - reservation.db_now).total_seconds() > 1.9
    assert 5.0 <= reservation.effective_rate_per_s < 5.2
    async with sessions.begin() as session:
        states = await BudgetRepository(session).states({"mm": SETTINGS}, recovery_s=60.0)
    assert states["mm"].health.value == "degraded"
    assert states["mm"].last_error == "1002 rate limit"
    # A second cut halves again, with a floor of 5 % of the configured rate.
    for _ in range(10):
        async with sessions.begin() as session:
            await BudgetRepository(session).record_rate_limited(
                "mm", configured_rate=10.0, recovery_s=60.0, pause_s=0.0, message="x"
            )
    async with sessions.begin() as session:
        states = await BudgetRepository(session).states({"mm": SETTINGS}, recovery_s=60.0)
    assert 0.5 <= states["mm"].effective_rate_per_s < 0.6
    # Recovery is linear in time: +configured rate per recovery window since the cut.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE provider_state SET effective_rate_per_s = 1.0, "
                "rate_cut_at = clock_timestamp() - interval '30 seconds'"
            )
        )
    async with sessions.begin() as session:
        states = await BudgetRepository(session).states({"mm": SETTINGS}, recovery_s=60.0)
    assert states["mm"].effective_rate_per_s == pytest.approx(6.0, abs=0.05)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE provider_state SET rate_cut_at = clock_timestamp() - interval '120 seconds'"
            )
        )
    assert (await _reserve(engine, 1)).effective_rate_per_s == 10.0


async def test_auth_failed_clears_when_the_key_changes(engine: AsyncEngine) -> None:
    await _setup(engine)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:
        await BudgetRepository(session).record_auth_failed("mm", retry_s=300, message="1004")
    async with sessions.begin() as session:  # a restart with the same key keeps the state
        await BudgetRepository(session).ensure_rows({"mm": SETTINGS})
        state = (await BudgetRepository(session).states({"mm": SETTINGS}, recovery_s=60))["mm"]
    assert state.health.value == "auth_failed"
    assert state.paused_until is not None
    fixed = SETTINGS.model_copy(update={"api_key": SecretStr("a-new-key")})
    async with sessions.begin() as session:
        await BudgetRepository(session).ensure_rows({"mm": fixed})
        state = (await BudgetRepository(session).states({"mm": fixed}, recovery_s=60))["mm"]
    assert state.health.value == "ok"
    assert state.paused_until is None
