"""Properties of the adaptive schedule (app/schedule/plans.py): the learned distribution,
the planned polls, what a plan costs, the hit chance the budget calls for and the
saturation forecast, for any learned percentiles, any bounds and any workload."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config import PollSchedule, ProviderSettings
from app.schedule import plans, pricing
from app.schedule.model import MIN_SAMPLES, TRUSTED_UP_TO, CompletionModel, size_class
from app.schedule.pricing import Workload
from tests.properties import PROPERTY, provider_settings

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
chances = st.floats(min_value=0.01, max_value=0.99)


@st.composite
def models(draw: st.DrawFn) -> CompletionModel:
    """Any non-decreasing percentiles: spread out, bunched up, or with long flat runs."""
    start = draw(st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
    steps = draw(
        st.lists(
            st.floats(min_value=0.0, max_value=1e3, allow_nan=False) | st.just(0.0),
            min_size=100,
            max_size=100,
        )
    )
    values = [start]
    for step in steps:
        values.append(values[-1] + step)
    return CompletionModel.of(values, draw(st.integers(min_value=MIN_SAMPLES)))


def adaptive_settings() -> st.SearchStrategy[ProviderSettings]:
    """Any schedule, hit chance and lateness, a first poll delay up to 10 min."""
    return provider_settings(
        shortest_interval_s=0.05,
        first_poll_delay_s=st.floats(min_value=0, max_value=600),
        schedule=st.sampled_from(PollSchedule),
        poll_hit_chance=chances,
        poll_lateness_s=st.floats(min_value=0, max_value=3600),
    )


workloads = st.lists(
    st.builds(Workload, st.floats(min_value=0.0, max_value=1e3, allow_nan=False), models()),
    max_size=3,
)
# 0: an unlimited instance; otherwise at least the tenth of a rate polls always keep.
capacities = st.just(0.0) | st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)
# Forecasts walk plans dozens of times per example: fewer examples keep these quick.
FORECAST = settings(parent=PROPERTY, max_examples=60)
hit_chances = chances | st.none()


@PROPERTY
@given(models(), seconds)
def test_cdf_is_a_probability_and_never_decreases(model: CompletionModel, age: float) -> None:
    done = model.cdf(age)
    assert 0.0 <= done <= 1.0
    assert model.cdf(age + 1.0) >= done


@PROPERTY
@given(models(), st.floats(min_value=0, max_value=1))
def test_quantile_stays_in_the_observed_range(model: CompletionModel, p: float) -> None:
    at = model.quantile(p)
    assert model.quantiles[0] <= at <= model.last
    # Inverse of the CDF wherever the distribution is not flat.
    assert model.cdf(at) >= p - 1e-9 or math.isclose(at, model.last)


@PROPERTY
@given(models(), seconds, chances)
def test_conditional_quantile_is_in_the_future_or_none(
    model: CompletionModel, age: float, p: float
) -> None:
    at = model.conditional_quantile(age, p)
    if at is None:
        assert model.cdf(age) >= TRUSTED_UP_TO
    else:
        assert age <= at <= max(age, model.last)


@PROPERTY
@given(models(), seconds, seconds, seconds)
def test_lateness_is_at_most_the_wait_and_grows_with_it(
    model: CompletionModel, age: float, wait: float, more: float
) -> None:
    late = model.lateness(age, age + wait)
    assert -1e-6 * max(1.0, wait) <= late <= wait * (1 + 1e-9) + 1e-9
    assert model.lateness(age, age + wait + more) >= late - 1e-6 * max(1.0, age + wait)


@PROPERTY
@given(models(), seconds, st.floats(min_value=0.0, max_value=1e5, allow_nan=False))
def test_lateness_age_inverts_lateness(model: CompletionModel, age: float, lateness: float) -> None:
    at = model.lateness_age(age, lateness)
    if at is None:
        assert model.cdf(age) >= TRUSTED_UP_TO
        return
    assert at >= age + lateness * (1 - 1e-9) - 1e-9  # lateness never exceeds the wait
    assert math.isclose(
        model.lateness(age, at), lateness, rel_tol=1e-6, abs_tol=1e-6 * max(1.0, at)
    )


@PROPERTY
@given(adaptive_settings(), models() | st.none(), seconds, st.integers(-3, 200), hit_chances)
def test_every_planned_poll_is_within_the_bounds(
    settings: ProviderSettings,
    model: CompletionModel | None,
    age: float,
    unchanged: int,
    hit_chance: float | None,
) -> None:
    delay = plans.plan_next(
        settings, age_s=age, unchanged_polls=unchanged, model=model, hit_chance=hit_chance
    )
    assert settings.min_poll_interval_s <= delay <= settings.max_poll_interval_s


@PROPERTY
@given(adaptive_settings(), models() | st.none(), hit_chances)
def test_first_poll_never_before_its_delay_nor_after_the_longest_interval(
    settings: ProviderSettings, model: CompletionModel | None, hit_chance: float | None
) -> None:
    delay = plans.plan_first(settings, model, hit_chance)
    assert delay >= settings.first_poll_delay_s
    assert delay <= max(settings.first_poll_delay_s, settings.max_poll_interval_s)


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


@PROPERTY
@given(st.integers(min_value=1, max_value=10**12))
def test_size_classes_are_ordered_half_octaves(hint: int) -> None:
    cls = size_class(hint)
    assert cls is not None
    assert cls >= 0
    assert size_class(hint * 2) == cls + 2
