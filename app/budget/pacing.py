"""Spending the shared budget in one replica: "can this request go out now?".

A batch of claims reserves as many send slots from the instance's row
(`app/budget/repository.py`); each slot is placed on this process's monotonic clock
(`LocalSlots`), the request waits for it, and right before its bytes are written
`SlotSource.before_send` checks it is still within SEND_SLACK_S of its slot and that the
instance is not paused (`InstanceGate`). A request that misses its slot is not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.budget.capacity import SEND_SLACK_S
from app.budget.repository import BudgetRepository, Reservation
from app.core.config import PollSettings, ProviderSettings
from app.core.metrics import BUDGET_SLOTS
from app.models import ProviderHealth


class SlotMissed(Exception):
    """The send slot passed (or the instance paused) before the request could go out."""


@dataclass
class LocalSlots:
    """A reservation placed on this process's monotonic clock.

    The anchor is the moment the reservation's answer arrived, which is at or after the
    database clock's `db_now`: slots can only land late here, never early.
    """

    reservation: Reservation
    anchor: float

    def at(self, index: int) -> float:
        offset = (self.reservation.first_slot - self.reservation.db_now).total_seconds()
        return self.anchor + offset + index * self.reservation.spacing_s


@dataclass
class InstanceGate:
    """Per-replica view of the instance: paused locally the moment a rate-limit or
    credential answer arrives, before the shared row says so to the other replicas."""

    # The loop's own stop event: a stopping loop sends nothing more.
    stop: asyncio.Event
    paused_until: float = 0.0
    health: ProviderHealth = ProviderHealth.OK

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class Pacer:
    """One instance's budget as this replica spends it: slots reserved from the shared row,
    waited for on the local clock, and checked again right before sending."""

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        poll_settings: PollSettings,
        sessions: async_sessionmaker[AsyncSession],
        stop: asyncio.Event,
    ) -> None:
        self.name = name
        self.settings = settings
        self.poll_settings = poll_settings
        self.sessions = sessions
        self.gate = InstanceGate(stop=stop)

    @property
    def limited(self) -> bool:
        return self.settings.rate_limit_per_s > 0

    async def reserve(self, count: int) -> LocalSlots:
        BUDGET_SLOTS.labels(self.name).inc(count)
        async with self.sessions.begin() as session:
            reservation = await BudgetRepository(session).reserve(
                self.name,
                count,
                configured_rate=self.settings.rate_limit_per_s,
                recovery_s=self.poll_settings.rate_recovery_s,
            )
            # Placed as the answer arrives, before the COMMIT: the slots land late by the
            # answer's trip only. After the commit they also landed late by its fsync, by a
            # different amount per reservation, and two replicas' slots bunched up by the
            # difference (seen: 11 requests in one second at 10/s under I/O load).
            anchor = time.monotonic()
        return LocalSlots(reservation, anchor=anchor)

    async def wait_for_slot(self, slot_at: float) -> None:
        while (delay := slot_at - time.monotonic()) > 0:
            if self.gate.stop.is_set():
                raise SlotMissed("stopping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.stop.wait(), timeout=delay)
        self.check_slot(slot_at)

    def check_slot(self, slot_at: float) -> None:
        if self.gate.stop.is_set():
            raise SlotMissed("stopping")
        if time.monotonic() - slot_at > SEND_SLACK_S:
            raise SlotMissed("late for the slot")
        if self.gate.paused_until > time.monotonic():
            raise SlotMissed("instance paused")

    def slots(self, first: float | None, lease_ends: float) -> SlotSource:
        """The slots of one poll: `first` reserved with its batch, more on demand."""
        return SlotSource(self, first, lease_ends)


class SlotSource:
    """Budget slots for one poll: the pre-reserved one, then a freshly reserved slot for
    each further request (MiniMax's file retrieve). `sent` tells whether any request left."""

    def __init__(self, pacer: Pacer, first: float | None, lease_ends: float) -> None:
        self.pacer = pacer
        self.pending = [first] if first is not None else []
        self.current: float | None = None
        self.lease_ends = lease_ends
        self.sent = False

    async def __call__(self) -> None:
        """Wait for the next request's slot."""
        if self.pacer.limited:
            if self.pending:
                self.current = self.pending.pop()
            else:
                try:
                    self.current = (await self.pacer.reserve(1)).at(0)
                except Exception as exc:
                    # The database went away under a follow-up request (file retrieve): a
                    # missed slot, retried with the task, not an adapter error.
                    raise SlotMissed(f"no budget slot: {type(exc).__name__}") from exc
            await self.pacer.wait_for_slot(self.current)
        elif self.pacer.gate.stop.is_set():
            raise SlotMissed("stopping")

    def before_send(self) -> None:
        """Right before the bytes go out: still within the slot's slack, or abort unsent.

        Checking here rather than when the wait ends keeps connection setup out of the
        lateness: a request that waited 50 ms for a fresh connection would otherwise reach
        the upstream bunched up with the ones behind it on warm connections."""
        if self.current is not None:
            self.pacer.check_slot(self.current)
        # An answer that arrives after the lease ran out is fenced off anyway: do not spend
        # a budget slot (and the upstream's patience) on it.
        if time.monotonic() + self.pacer.settings.request_timeout_s > self.lease_ends:
            raise SlotMissed("the claim's lease would run out before the answer")
        self.sent = True
