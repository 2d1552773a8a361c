"""When a poll loop claims and how many (app/polling/claiming.py): table tests of the pure
policy. At 20/s a slot is 1.025 / 20 = 51.25 ms."""

from __future__ import annotations

import pytest

from app.budget.capacity import booked_at_most_s
from app.core.config import PollSettings
from app.polling.claiming import (
    after_missed_slot,
    lead_s,
    plan_claim,
    remember_claim_time,
)

SETTINGS = PollSettings()  # claim_horizon_s 2.0, claim_batch_s 0.25, max_batch 500, tick 1
SLOT_20 = 1.025 / 20


@pytest.mark.parametrize(
    ("spacing_s", "claim_time_s", "horizon_s", "expected"),
    [
        (SLOT_20, 0.0, 2.0, 2 * SLOT_20),  # a quick claim: two slots ahead
        (SLOT_20, 0.030, 2.0, 2 * SLOT_20),  # twice 30 ms is still under two slots
        (SLOT_20, 0.200, 2.0, 0.400),  # a slow claim: twice its time
        (SLOT_20, 5.0, 2.0, 2.0),  # never beyond the horizon
        (1.025 / 1000, 0.020, 2.0, 0.040),  # a fast budget: the claim time decides
        (1.025 / 0.2, 0.0, 2.0, 2.0),  # a slow budget: two slots are beyond the horizon
    ],
)
def test_the_lead_covers_the_claim_time_and_two_slots(
    spacing_s: float, claim_time_s: float, horizon_s: float, expected: float
) -> None:
    assert lead_s(
        spacing_s=spacing_s, claim_time_s=claim_time_s, horizon_s=horizon_s
    ) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "booked_s", "claim_time_s", "free", "expected"),  # expected: wait, batch, lead
    [
        # No limit: as much as there is room for, at once.
        (0.0, 0.0, 0.0, 256, (0.0, 256, 0.0)),
        (0.0, 0.0, 0.0, 10_000, (0.0, 500, 0.0)),
        # No room: look again after a tick, limit or not.
        (0.0, 0.0, 0.0, 0, (1.0, 0, 0.0)),
        (20.0, 0.0, 0.0, 0, (1.0, 0, 0.0)),
        # Booked beyond the lead (two slots): wait until it is down to the lead.
        (20.0, 1.0, 0.0, 256, (1.0 - 2 * SLOT_20, 0, 2 * SLOT_20)),
        # Down to the lead: top it up by one batch, 0.25 s = 4.9 slots.
        (20.0, 2 * SLOT_20, 0.0, 256, (0.0, 5, 2 * SLOT_20)),
        # The queue ran dry: the lead and the batch at once.
        (20.0, 0.0, 0.0, 256, (0.0, 7, 2 * SLOT_20)),
        (20.0, -3.0, 0.0, 256, (0.0, 7, 2 * SLOT_20)),
        # A slow claim: a longer lead, the same top-up.
        (20.0, 0.4, 0.2, 256, (0.0, 5, 0.4)),
        (20.0, 0.5, 0.2, 256, (0.1, 0, 0.4)),
        # Little room: no more than it.
        (20.0, 0.0, 0.0, 3, (0.0, 3, 2 * SLOT_20)),
        # A slow budget: one task at a time, claimed two seconds (the horizon) ahead.
        (0.2, 1.9, 0.0, 256, (0.0, 1, 2.0)),
        (0.2, 2.5, 0.0, 256, (0.5, 0, 2.0)),
        # A fast budget: 0.25 s is 244 slots at 1,000/s; the horizon and max_batch cap it.
        (1000.0, 0.040, 0.020, 256, (0.0, 244, 0.040)),
        (1000.0, 0.0, 0.020, 10_000, (0.0, 283, 0.040)),
        (1000.0, 0.0, 1.9, 10_000, (0.0, 500, 2.0)),
    ],
)
def test_a_claim_tops_the_booked_queue_up_once_it_is_down_to_the_lead(
    rate: float,
    booked_s: float,
    claim_time_s: float,
    free: int,
    expected: tuple[float, int, float],
) -> None:
    plan = plan_claim(
        rate_per_s=rate,
        booked_s=booked_s,
        claim_time_s=claim_time_s,
        free=free,
        settings=SETTINGS,
    )
    wait_s, batch, lead = expected
    assert plan.batch == batch
    assert plan.wait_s == pytest.approx(wait_s)
    assert plan.lead_s == pytest.approx(lead)


def test_the_batch_and_horizon_settings_bound_the_top_up() -> None:
    def batch(settings: PollSettings) -> int:
        at_lead = 2 * SLOT_20
        plan = plan_claim(
            rate_per_s=20.0, booked_s=at_lead, claim_time_s=0.0, free=256, settings=settings
        )
        assert plan.lead_s == pytest.approx(at_lead)
        return plan.batch

    assert batch(PollSettings(claim_batch_s=0.1)) == 2
    assert batch(PollSettings(claim_batch_s=1.0)) == 20


def test_a_slow_claim_books_at_most_the_horizon_and_a_batch_ahead() -> None:
    settings = PollSettings(claim_batch_s=0.25, claim_horizon_s=0.5)
    plan = plan_claim(rate_per_s=20.0, booked_s=0.0, claim_time_s=1.0, free=256, settings=settings)
    assert plan.lead_s == pytest.approx(0.5)
    assert plan.batch == 15  # 0.75 s is 14.6 slots
    assert booked_at_most_s(settings) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("previous", "measured", "expected"),
    [
        (0.0, 0.030, 0.030),  # the first claim
        (0.030, 0.200, 0.200),  # a slower claim replaces it at once
        (0.200, 0.030, 0.190),  # a quicker one: the slow one fades, 5 % a claim
        (0.031, 0.030, 0.030),  # ... down to what claims take now
    ],
)
def test_the_claim_time_is_the_slowest_of_the_recent_claims(
    previous: float, measured: float, expected: float
) -> None:
    assert remember_claim_time(previous, measured) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    ("claim_time_s", "lead", "expected"),
    [
        (0.030, 2 * SLOT_20, 2 * SLOT_20),  # the next lead is twice the one that was missed
        (0.030, 0.4, 0.4),
        (0.5, 0.4, 0.5),  # already longer: as it was
    ],
)
def test_a_slot_gone_by_unused_doubles_the_next_lead(
    claim_time_s: float, lead: float, expected: float
) -> None:
    after = after_missed_slot(claim_time_s, lead)
    assert after == pytest.approx(expected)
    assert lead_s(spacing_s=SLOT_20, claim_time_s=after, horizon_s=2.0) == pytest.approx(
        max(2 * expected, 2 * SLOT_20)
    )
