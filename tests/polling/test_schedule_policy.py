"""The adaptive schedule's pure parts: the learned distribution, the planned intervals, the
budget stretch and the saturation forecast (app/polling/policy.py). No timing involved."""

from __future__ import annotations

import math

import pytest

from app.core.config import KIND_DEFAULTS, PollSchedule, ProviderKind, ProviderSettings
from app.polling import policy
from app.polling.policy import CompletionModel, Plan

BASE = {**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "kind": ProviderKind.MINIMAX_T2A}
ADAPTIVE = ProviderSettings(
    **{**BASE, "first_poll_delay_s": 1.0, "min_poll_interval_s": 1.0, "max_poll_interval_s": 60.0}
)
BACKOFF = ADAPTIVE.model_copy(update={"schedule": PollSchedule.BACKOFF})
FIXED = ADAPTIVE.model_copy(update={"schedule": PollSchedule.FIXED, "min_poll_interval_s": 5.0})


def uniform(low: float, high: float, samples: int = 100) -> CompletionModel:
    """Completions spread evenly over [low, high]: the CDF is a straight line."""
    return CompletionModel.of([low + (high - low) * p for p in policy.PERCENTILES], samples)


# Most tasks finish between 15 and 25 s; a tenth take up to 200 s (percentiles 90..100).
SKEWED = CompletionModel.of(
    [15 + 10 * i / 90 for i in range(91)] + [25 + 175 * i / 10 for i in range(1, 11)], 500
)


class TestCompletionModel:
    @pytest.mark.parametrize(
        ("age", "expected"),
        [(-1.0, 0.0), (0.0, 0.0), (10.0, 0.0), (15.0, 0.25), (20.0, 0.5), (30.0, 1.0), (99, 1.0)],
    )
    def test_cdf_interpolates_between_percentiles(self, age: float, expected: float) -> None:
        assert uniform(10, 30).cdf(age) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("p", "expected"), [(0.0, 10.0), (0.25, 15.0), (0.5, 20.0), (0.999, 29.98), (1.0, 30.0)]
    )
    def test_quantile_inverts_the_cdf(self, p: float, expected: float) -> None:
        assert uniform(10, 30).quantile(p) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("age", "p", "expected"),
        [
            (0.0, 0.5, 20.0),  # not started: the plain median
            (20.0, 0.5, 25.0),  # half done: the median of what is left
            (25.0, 0.2, 26.0),
            (29.0, 0.5, 29.5),
            (29.79, 0.5, 29.895),
            (29.8, 0.5, None),  # outlived 99 % of the completions seen: no prediction
            (30.0, 0.5, None),
            (45.0, 0.5, None),
        ],
    )
    def test_conditional_quantile(self, age: float, p: float, expected: float | None) -> None:
        got = uniform(10, 30).conditional_quantile(age, p)
        assert got == (pytest.approx(expected) if expected is not None else None)

    def test_repeated_values_are_a_step(self) -> None:
        # Every task took exactly 12 s: done with certainty at 12 s, never before.
        model = CompletionModel.of([12.0] * 101, 40)
        assert model.cdf(11.9) == 0.0
        assert model.cdf(12.0) == 1.0
        assert model.conditional_quantile(0.0, 0.2) == 12.0

    @pytest.mark.parametrize(
        "quantiles", [[1.0] * 100, [1.0] * 102, [float(100 - i) for i in range(101)]]
    )
    def test_rejects_malformed_percentiles(self, quantiles: list[float]) -> None:
        with pytest.raises(ValueError, match="percentiles"):
            CompletionModel.of(quantiles, 50)


@pytest.mark.parametrize(
    ("hint", "expected"),
    [(None, None), (0, None), (-5, None), (1, 0), (2, 2), (3, 3), (1000, 19), (1400, 20)],
)
def test_size_class_is_a_half_octave(hint: int | None, expected: int | None) -> None:
    assert policy.size_class(hint) == expected


class TestPlanNext:
    def test_fixed_polls_at_the_minimum_interval(self) -> None:
        plan = policy.plan_next(FIXED, age_s=100, unchanged_polls=7, model=SKEWED, stretch=3)
        assert plan == Plan(5.0, 5.0)

    @pytest.mark.parametrize("unchanged", [0, 1, 3, 20])
    def test_backoff_follows_the_curve(self, unchanged: int) -> None:
        plan = policy.plan_next(BACKOFF, age_s=5, unchanged_polls=unchanged, model=SKEWED)
        expected = policy.unchanged_delay(BACKOFF, unchanged)
        assert plan == Plan(expected, expected)

    def test_adaptive_without_a_model_falls_back_to_the_curve(self) -> None:
        plan = policy.plan_next(ADAPTIVE, age_s=5, unchanged_polls=2, model=None)
        assert plan.delay_s == policy.unchanged_delay(ADAPTIVE, 2)

    def test_the_fallback_is_stretched_too(self) -> None:
        # The forecast counts every adaptive task's interval in the demand it fits to the
        # budget, so a task on the fallback curve must stretch like the others.
        plan = policy.plan_next(ADAPTIVE, age_s=5, unchanged_polls=2, model=None, stretch=3.0)
        assert plan.interval_s == policy.unchanged_delay(ADAPTIVE, 2)
        assert plan.delay_s == pytest.approx(3 * policy.unchanged_delay(ADAPTIVE, 2))
        first = policy.plan_first(ADAPTIVE, None, stretch=3.0)
        assert first.delay_s == 3 * ADAPTIVE.first_poll_delay_s

    @pytest.mark.parametrize("age", [183.0, 199.0, 500.0])
    def test_adaptive_past_the_99th_percentile_falls_back_to_the_curve(self, age: float) -> None:
        plan = policy.plan_next(ADAPTIVE, age_s=age, unchanged_polls=3, model=SKEWED)
        assert plan.delay_s == policy.unchanged_delay(ADAPTIVE, 3)

    def test_no_bunching_before_the_longest_completion_seen(self) -> None:
        # Walk a task that never finishes through the tail: intervals never collapse.
        age, unchanged, delays = 30.0, 0, []
        while age < 400:
            plan = policy.plan_next(ADAPTIVE, age_s=age, unchanged_polls=unchanged, model=SKEWED)
            delays.append(plan.delay_s)
            age += plan.delay_s
            unchanged += 1
        # The last trusted stretch (percentiles 90-99) still narrows the intervals, but they
        # stop well short of the 1 s minimum, then grow again on the backoff curve.
        assert min(delays) > 3 * ADAPTIVE.min_poll_interval_s
        assert len(delays) <= 25
        assert delays[-1] == ADAPTIVE.max_poll_interval_s

    @pytest.mark.parametrize(
        ("age", "expected"),
        [
            # 20 % of the remaining probability mass lies this far ahead.
            (5.0, 12.222),  # nothing finishes before 15 s: wait until the bulk starts
            (16.0, 2.022),  # in the bulk: short intervals
            (24.0, 1.0),  # the bulk's last second still holds half of what is left
            (60.0, 28.0),  # the tail is long and thin: long intervals
        ],
    )
    def test_adaptive_polls_where_completion_is_likely(self, age: float, expected: float) -> None:
        plan = policy.plan_next(ADAPTIVE, age_s=age, unchanged_polls=0, model=SKEWED)
        assert plan.delay_s == pytest.approx(expected, rel=1e-3)
        assert plan.interval_s == plan.delay_s

    def test_each_planned_poll_has_the_hit_chance(self) -> None:
        for age in (0.0, 14.0, 17.5, 22.0, 40.0):
            plan = policy.plan_next(ADAPTIVE, age_s=age, unchanged_polls=0, model=SKEWED)
            done, later = SKEWED.cdf(age), SKEWED.cdf(age + plan.delay_s)
            chance = (later - done) / (1 - done)
            # Exactly the hit chance, unless a bound moved the poll.
            if ADAPTIVE.min_poll_interval_s < plan.delay_s < ADAPTIVE.max_poll_interval_s:
                assert chance == pytest.approx(ADAPTIVE.poll_hit_chance, abs=1e-9)

    @pytest.mark.parametrize("age", [0.0, 10.0, 15.5, 19.0, 24.9, 30.0, 150.0, 199.0])
    @pytest.mark.parametrize("stretch", [1.0, 1.7, 40.0, 1e6])
    def test_every_delay_is_within_the_bounds(self, age: float, stretch: float) -> None:
        plan = policy.plan_next(
            ADAPTIVE, age_s=age, unchanged_polls=0, model=SKEWED, stretch=stretch
        )
        for value in (plan.interval_s, plan.delay_s):
            assert ADAPTIVE.min_poll_interval_s <= value <= ADAPTIVE.max_poll_interval_s

    def test_stretch_scales_the_delay_not_the_demand(self) -> None:
        plain = policy.plan_next(ADAPTIVE, age_s=16.0, unchanged_polls=0, model=SKEWED)
        stretched = policy.plan_next(
            ADAPTIVE, age_s=16.0, unchanged_polls=0, model=SKEWED, stretch=3.0
        )
        assert stretched.interval_s == plain.interval_s
        assert stretched.delay_s == pytest.approx(3 * plain.delay_s)

    def test_a_higher_hit_chance_polls_less_often(self) -> None:
        eager = ADAPTIVE.model_copy(update={"poll_hit_chance": 0.1})
        lazy = ADAPTIVE.model_copy(update={"poll_hit_chance": 0.4})
        for age in (0.0, 16.0, 22.0):
            a = policy.plan_next(eager, age_s=age, unchanged_polls=0, model=SKEWED)
            b = policy.plan_next(lazy, age_s=age, unchanged_polls=0, model=SKEWED)
            assert a.delay_s < b.delay_s


class TestPlanFirst:
    def test_without_a_model_the_first_poll_delay(self) -> None:
        assert policy.plan_first(ADAPTIVE, None).delay_s == ADAPTIVE.first_poll_delay_s

    def test_with_a_model_where_the_first_completions_start(self) -> None:
        assert policy.plan_first(ADAPTIVE, SKEWED).delay_s == pytest.approx(SKEWED.quantile(0.2))

    def test_never_before_the_first_poll_delay(self) -> None:
        quick = uniform(0.1, 0.5)
        late_start = ADAPTIVE.model_copy(update={"first_poll_delay_s": 3.0})
        assert policy.plan_first(late_start, quick).delay_s == 3.0

    def test_never_later_than_the_longest_interval(self) -> None:
        slow = uniform(3600, 7200)
        assert policy.plan_first(ADAPTIVE, slow, stretch=5).delay_s == 60.0

    def test_backoff_and_fixed_ignore_the_model(self) -> None:
        for settings in (BACKOFF, FIXED):
            assert policy.plan_first(settings, SKEWED).delay_s == settings.first_poll_delay_s


@pytest.mark.parametrize(
    ("model", "age", "expected"),
    [(None, 0.0, None), (SKEWED, 0.0, 20.556), (SKEWED, 20.0, 23.056), (SKEWED, 300.0, None)],
)
def test_estimated_ready_age(model: CompletionModel | None, age: float, expected: float) -> None:
    got = policy.estimated_ready_age(model, age)
    assert got == (pytest.approx(expected, rel=1e-3) if expected is not None else None)


class TestStretch:
    # 100 tasks asking for a poll every 2 s and 100 every 20 s: 55 polls/s wanted.
    MIX = [(2.0, 100), (20.0, 100)]

    def test_no_stretch_when_demand_fits(self) -> None:
        assert policy.solve_stretch(self.MIX, ADAPTIVE, rate_per_s=100) == 1.0

    def test_no_stretch_without_a_budget(self) -> None:
        assert policy.solve_stretch(self.MIX, ADAPTIVE, rate_per_s=0) == 1.0
        assert policy.solve_stretch([], ADAPTIVE, rate_per_s=10) == 1.0

    @pytest.mark.parametrize("rate", [50.0, 20.0, 10.0, 5.0])
    def test_stretch_brings_demand_to_the_target_share(self, rate: float) -> None:
        stretch = policy.solve_stretch(self.MIX, ADAPTIVE, rate_per_s=rate)
        assert stretch > 1
        fitted = policy.demand(self.MIX, ADAPTIVE, stretch)
        assert fitted <= rate * policy.TARGET_UTILISATION
        assert fitted >= rate * policy.TARGET_UTILISATION * 0.99  # no more stretch than needed

    def test_stretch_keeps_the_likely_tasks_ahead(self) -> None:
        # Under a stretch the 2 s tasks still poll ten times as often as the 20 s ones,
        # until the longer intervals reach max_poll_interval_s.
        stretch = policy.solve_stretch(self.MIX, ADAPTIVE, rate_per_s=20)
        short = policy.bounded(ADAPTIVE, 2.0 * stretch)
        long = policy.bounded(ADAPTIVE, 20.0 * stretch)
        assert long / short == pytest.approx(10.0) or long == ADAPTIVE.max_poll_interval_s

    def test_when_even_the_longest_interval_is_too_much_everything_goes_there(self) -> None:
        # 10,000 tasks at one poll a minute is 167/s: more than a 10/s budget can give.
        stretch = policy.solve_stretch([(2.0, 5000), (30.0, 5000)], ADAPTIVE, rate_per_s=10)
        assert policy.bounded(ADAPTIVE, 2.0 * stretch) == ADAPTIVE.max_poll_interval_s


@pytest.mark.parametrize(
    ("rate", "follow_ups", "expected"),
    [
        (10.0, 0.0, 10 / 1.05),  # the spacing margin only
        (10.0, 3.5, 10 / 1.05 - 3.5),  # completions' file retrieves come first
        (10.0, 50.0, 1.0),  # polls always keep a tenth of the rate
        (10.0, -1.0, 10 / 1.05),
        (0.0, 5.0, 0.0),  # unlimited instance: no capacity to plan against
    ],
)
def test_poll_capacity(rate: float, follow_ups: float, expected: float) -> None:
    got = policy.poll_capacity(rate, spacing_factor=1.05, follow_ups_per_s=follow_ups)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("capacity", "overdue", "expected"),
    [
        (10.0, 0, 9.0),  # TARGET_UTILISATION of the capacity
        (10.0, 60, 7.0),  # 60 overdue tasks drain over 30 s: 2/s less for planned polls
        (10.0, 100_000, 0.9),  # never below a tenth
        (10.0, -5, 9.0),
    ],
)
def test_poll_budget_leaves_room_to_drain_the_overdue(
    capacity: float, overdue: int, expected: float
) -> None:
    assert policy.poll_budget(capacity, overdue) == pytest.approx(expected)


def test_an_overdue_backlog_stretches_further() -> None:
    mix = [(2.0, 100)]
    calm = policy.solve_stretch(mix, ADAPTIVE, 20.0)
    behind = policy.solve_stretch(mix, ADAPTIVE, 20.0, overdue=150)
    assert behind > calm
    assert policy.demand(mix, ADAPTIVE, behind) <= policy.poll_budget(20.0, 150) * 1.001


class TestSaturation:
    def test_below_the_budget(self) -> None:
        forecast = policy.saturation([(10.0, 50)], ADAPTIVE, rate_per_s=10)
        assert forecast.demand_per_s == pytest.approx(5.0)
        assert forecast.ratio == pytest.approx(0.5)
        assert forecast.stretch == 1.0
        assert forecast.expected_detection_delay_s == pytest.approx(5.0)

    def test_saturated_adaptive_stretches_and_says_how_late(self) -> None:
        forecast = policy.saturation([(2.0, 200)], ADAPTIVE, rate_per_s=10)
        assert forecast.ratio == pytest.approx(10.0)
        assert forecast.stretch == pytest.approx(100 / 9, rel=0.01)
        # 100 polls/s wanted, 9 given: every task every ~22 s, detection ~11 s late.
        assert forecast.expected_detection_delay_s == pytest.approx(200 / 9 / 2, rel=0.01)

    def test_saturated_fixed_keeps_its_interval_and_queues(self) -> None:
        forecast = policy.saturation([(5.0, 200)], FIXED, rate_per_s=10)
        assert forecast.ratio == pytest.approx(4.0)
        assert forecast.stretch == 1.0
        # 200 tasks at 10/s: a round takes 20 s, so a completion waits 10 s on average.
        assert forecast.expected_detection_delay_s == pytest.approx(10.0)

    def test_unlimited_instance_has_no_ratio(self) -> None:
        forecast = policy.saturation([(5.0, 200)], ADAPTIVE, rate_per_s=0)
        assert forecast.ratio == 0.0
        assert forecast.expected_detection_delay_s is None

    def test_no_active_tasks(self) -> None:
        forecast = policy.saturation([], ADAPTIVE, rate_per_s=10)
        assert (forecast.demand_per_s, forecast.ratio) == (0.0, 0.0)


def test_fairness_bound_holds_for_any_mix() -> None:
    """However the budget is split, no task's planned delay exceeds max_poll_interval_s: a
    task then waits at most that plus its turn in the longest-overdue-first backlog."""
    for rate in (0.5, 3.0, 10.0, 1000.0):
        intervals = [(d, 10) for d in (1.0, 1.5, 4.0, 9.0, 33.0, 60.0)]
        stretch = policy.solve_stretch(intervals, ADAPTIVE, rate)
        assert math.isfinite(stretch)
        for d, _ in intervals:
            assert policy.bounded(ADAPTIVE, d * stretch) <= ADAPTIVE.max_poll_interval_s
