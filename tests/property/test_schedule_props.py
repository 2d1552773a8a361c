"""Properties of the adaptive schedule (app/polling/policy.py): the learned distribution,
the planned polls, the budget stretch and the saturation forecast, for any learned
percentiles, any bounds and any mix of active tasks."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from app.core.config import PollSchedule, ProviderKind, ProviderSettings
from app.polling import policy
from app.polling.policy import CompletionModel
from tests.property._settings import PROPERTY

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
    return CompletionModel.of(values, draw(st.integers(min_value=policy.MIN_SAMPLES)))


@st.composite
def adaptive_settings(draw: st.DrawFn) -> ProviderSettings:
    interval = st.floats(min_value=0.05, max_value=86_400, allow_nan=False)
    low, high = sorted((draw(interval), draw(interval)))
    return ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A,
        base_url="https://upstream.example",
        rate_limit_per_s=10,
        first_poll_delay_s=draw(st.floats(min_value=0, max_value=600)),
        min_poll_interval_s=low,
        max_poll_interval_s=high,
        request_timeout_s=10,
        deadline_s=3600,
        schedule=draw(st.sampled_from(PollSchedule)),
        poll_hit_chance=draw(chances),
    )


mixes = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=1e5, allow_nan=False),
        st.integers(min_value=1, max_value=10_000),
    ),
    max_size=30,
)
rates = st.floats(min_value=0.01, max_value=1e4, allow_nan=False)


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
        assert model.cdf(age) >= policy.TRUSTED_UP_TO
    else:
        assert age <= at <= max(age, model.last)


@PROPERTY
@given(adaptive_settings(), models() | st.none(), seconds, st.integers(-3, 200), rates)
def test_every_planned_poll_is_within_the_bounds(
    settings: ProviderSettings,
    model: CompletionModel | None,
    age: float,
    unchanged: int,
    stretch: float,
) -> None:
    plan = policy.plan_next(
        settings, age_s=age, unchanged_polls=unchanged, model=model, stretch=stretch
    )
    for value in (plan.interval_s, plan.delay_s):
        assert settings.min_poll_interval_s <= value <= settings.max_poll_interval_s
    assert plan.delay_s >= plan.interval_s or math.isclose(plan.delay_s, plan.interval_s)


@PROPERTY
@given(adaptive_settings(), models() | st.none(), rates)
def test_first_poll_never_before_its_delay_nor_after_the_longest_interval(
    settings: ProviderSettings, model: CompletionModel | None, stretch: float
) -> None:
    plan = policy.plan_first(settings, model, stretch)
    assert plan.delay_s >= settings.first_poll_delay_s
    assert plan.delay_s <= max(settings.first_poll_delay_s, settings.max_poll_interval_s)


@PROPERTY
@given(adaptive_settings(), mixes, rates)
def test_stretch_fits_the_budget_or_parks_everyone_at_the_longest_interval(
    settings: ProviderSettings, mix: list[tuple[float, int]], rate: float
) -> None:
    stretch = policy.solve_stretch(mix, settings, rate)
    assert stretch >= 1.0
    assert math.isfinite(stretch)
    budget = rate * policy.TARGET_UTILISATION
    fitted = policy.demand(mix, settings, stretch)
    everyone_at_max = all(
        math.isclose(policy.bounded(settings, d * stretch), settings.max_poll_interval_s)
        for d, _ in mix
    )
    assert fitted <= budget * 1.0001 or everyone_at_max
    # Fair: no task is planned beyond max_poll_interval_s whatever the stretch.
    assert all(
        policy.bounded(settings, d * stretch) <= settings.max_poll_interval_s for d, _ in mix
    )


@PROPERTY
@given(adaptive_settings(), mixes, rates, st.floats(min_value=1.0, max_value=100.0))
def test_more_stretch_never_asks_for_more_polls(
    settings: ProviderSettings, mix: list[tuple[float, int]], rate: float, more: float
) -> None:
    stretch = policy.solve_stretch(mix, settings, rate)
    assert policy.demand(mix, settings, stretch * more) <= policy.demand(mix, settings, stretch)


@PROPERTY
@given(adaptive_settings(), mixes, rates)
def test_saturation_forecast_is_consistent(
    settings: ProviderSettings, mix: list[tuple[float, int]], rate: float
) -> None:
    forecast = policy.saturation(mix, settings, rate)
    assert forecast.demand_per_s >= 0
    assert forecast.ratio == (forecast.demand_per_s / rate if mix else 0.0)
    if settings.schedule is not PollSchedule.ADAPTIVE:
        assert forecast.stretch == 1.0
    if mix:
        assert forecast.expected_detection_delay_s is not None
        assert forecast.expected_detection_delay_s >= settings.min_poll_interval_s / 2


@PROPERTY
@given(st.integers(min_value=1, max_value=10**12))
def test_size_classes_are_ordered_half_octaves(hint: int) -> None:
    size_class = policy.size_class(hint)
    assert size_class is not None
    assert size_class >= 0
    assert policy.size_class(hint * 2) == size_class + 2
