"""Properties of what a plan costs, the hit chance the budget calls for and the saturation
forecast (app/schedule/pricing.py), for any learned percentiles, any bounds and any
workload."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config import PollSchedule, ProviderSettings
from app.schedule import plans, pricing
from app.schedule.model import CompletionModel
from app.schedule.pricing import Workload
from tests.properties import PROPERTY
from tests.schedule.support import adaptive_settings, hit_chances, models

workloads = st.lists(
    st.builds(Workload, st.floats(min_value=0.0, max_value=1e3, allow_nan=False), models()),
    max_size=3,
)
# 0: an unlimited instance; otherwise at least the tenth of a rate polls always keep.
capacities = st.just(0.0) | st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)
# Forecasts walk plans dozens of times per example: fewer examples keep these quick.
FORECAST = settings(parent=PROPERTY, max_examples=60)


@PROPERTY
@given(adaptive_settings(), models(), hit_chances)
def test_a_plan_costs_at_least_one_poll_and_a_finite_delay(
    settings: ProviderSettings, model: CompletionModel, hit_chance: float | None
) -> None:
    cost = pricing.schedule_cost(settings, model, hit_chance)
    assert 1.0 - 1e-9 <= cost.polls < math.inf
    assert 0.0 <= cost.delay_s < math.inf


@FORECAST
@given(adaptive_settings(), workloads, capacities, st.integers(0, 10_000))
def test_the_hit_chance_fits_the_budget_or_is_the_highest(
    settings: ProviderSettings, work: list[Workload], capacity: float, overdue: int
) -> None:
    chance = pricing.solve_hit_chance(work, settings, capacity, overdue)
    own = settings.poll_hit_chance
    assert own <= chance <= max(own, plans.MAX_HIT_CHANCE)
    if settings.schedule is not PollSchedule.ADAPTIVE or capacity <= 0:
        assert chance == own
    elif chance < max(own, plans.MAX_HIT_CHANCE):
        budget = pricing.poll_budget(capacity, overdue)
        assert pricing.demand(work, settings, chance) <= budget * (1 + 1e-9)
    # Fair: whatever the hit chance, no planned poll is beyond max_poll_interval_s.
    for w in work:
        for age in (0.0, w.model.quantile(0.5), w.model.last):
            delay = plans.plan_next(
                settings, age_s=age, unchanged_polls=1, model=w.model, hit_chance=chance
            )
            assert delay <= settings.max_poll_interval_s


@FORECAST
@given(adaptive_settings(), workloads, capacities, st.floats(min_value=1.0, max_value=100.0))
def test_more_capacity_never_raises_the_hit_chance(
    settings: ProviderSettings, work: list[Workload], capacity: float, more: float
) -> None:
    tight = pricing.solve_hit_chance(work, settings, capacity)
    roomy = pricing.solve_hit_chance(work, settings, capacity * more)
    assert roomy <= tight + pricing.HIT_CHANCE_RESOLUTION


@FORECAST
@given(adaptive_settings(), workloads, capacities, st.integers(0, 10_000))
def test_saturation_forecast_is_consistent(
    settings: ProviderSettings, work: list[Workload], capacity: float, overdue: int
) -> None:
    forecast = pricing.saturation(work, settings, capacity, overdue)
    live = [w for w in work if w.rate_per_s > 0]
    assert forecast.demand_per_s >= 0
    assert forecast.ratio == (forecast.demand_per_s / capacity if live and capacity > 0 else 0.0)
    if settings.schedule is not PollSchedule.ADAPTIVE:
        assert forecast.hit_chance == settings.poll_hit_chance
    if live and capacity > 0:
        assert forecast.expected_detection_delay_s is not None
        assert 0.0 <= forecast.expected_detection_delay_s < math.inf
    else:
        assert forecast.expected_detection_delay_s is None
