"""When a poll loop claims due tasks, and how many (pure).

A claimed task's budget slot comes after every slot the replicas have already booked, so
the booked queue is what a task that falls due waits behind, whoever's backlog filled it:
the fair claim (`app/core/repository.py`) puts a quiet tenant's task in the next batch,
and this keeps the queue in front of that batch short. While the budget binds, a loop
claims again once the instance's booked queue is down to its *lead* and tops the queue up
by `engine.claim_batch_s` of the budget. The lead is the time a claim takes to land its
slots (state read, claim, reservation, and how late the loop woke for it), measured by the
loop and doubled, and never under LEAD_SLOTS slots: shorter and the budget would go idle
while the claim is under way; longer and every new task waits for it. A task that falls due
then waits about half a batch for a claim and one lead for its slot, instead of up to two
`claim_horizon_s` of slots booked before it ("Fair shares between tenants" in
docs/architecture.md). A poll that still lost its slot doubles the lead; the lead never
exceeds `engine.claim_horizon_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.budget.capacity import SPACING_FACTOR
from app.core.config import PollSettings

# The lead is never under this many slots: a reservation's first slot must be far enough
# ahead for the request that takes it to reach its send check in time.
LEAD_SLOTS = 2
# The lead covers this many times the claim time the loop measured lately.
LEAD_FACTOR = 2.0
# The measured claim time is the slowest of the recent ones: each claim's measurement
# replaces it when slower, and it shrinks by this factor per claim otherwise, so one slow
# claim (a busy machine) lengthens the lead for some dozen claims, not for good.
CLAIM_TIME_DECAY = 0.95


@dataclass(frozen=True)
class ClaimPlan:
    """What the loop does now: wait `wait_s` and look again (claiming nothing), or claim up
    to `batch` tasks. `lead_s` is the booked queue the plan claims at (0: no budget)."""

    wait_s: float
    batch: int
    lead_s: float


def lead_s(*, spacing_s: float, claim_time_s: float, horizon_s: float) -> float:
    """How short the booked queue gets before the loop claims again."""
    return min(horizon_s, max(LEAD_SLOTS * spacing_s, LEAD_FACTOR * claim_time_s))


def plan_claim(
    *,
    rate_per_s: float,
    booked_s: float,
    claim_time_s: float,
    free: int,
    settings: PollSettings,
) -> ClaimPlan:
    """`rate_per_s`: the instance's effective rate, 0 without a limit; `booked_s`: how far
    ahead of now the replicas have booked it; `claim_time_s`: the loop's recent claim time
    (`remember_claim_time`); `free`: polls the loop may start."""
    if free <= 0:
        return ClaimPlan(wait_s=settings.tick_s, batch=0, lead_s=0.0)
    room = min(free, settings.max_batch)
    if rate_per_s <= 0:
        return ClaimPlan(wait_s=0.0, batch=room, lead_s=0.0)
    spacing = SPACING_FACTOR / rate_per_s
    lead = lead_s(spacing_s=spacing, claim_time_s=claim_time_s, horizon_s=settings.claim_horizon_s)
    booked = max(0.0, booked_s)
    if booked > lead:
        return ClaimPlan(wait_s=booked - lead, batch=0, lead_s=lead)
    # Up to one batch beyond the lead (all of it when the queue ran dry), at least one task.
    slots = math.ceil(round((lead + settings.claim_batch_s - booked) / spacing, 9))
    return ClaimPlan(wait_s=0.0, batch=max(1, min(room, slots)), lead_s=lead)


def remember_claim_time(previous_s: float, measured_s: float) -> float:
    """The loop's claim time after one more claim took `measured_s`."""
    return max(measured_s, previous_s * CLAIM_TIME_DECAY)


def after_missed_slot(claim_time_s: float, lead_s: float) -> float:
    """The loop's claim time after a poll gave its task back unsent (its batch's slots went
    by before it could take one: a machine too busy for the lead). The next lead is twice
    the one that was too short, and fades as claims land in time again."""
    return max(claim_time_s, lead_s)
