"""The adaptive schedule's pure parts: the learned distribution, the planned polls, what a
plan costs, the hit chance the budget calls for and the saturation forecast
(app/schedule/plans.py). No timing involved."""

from __future__ import annotations

import pytest

from app.budget.capacity import poll_capacity
from app.core.config import KIND_DEFAULTS, PollSchedule, ProviderKind, ProviderSettings
from app.schedule import plans, pricing
from app.schedule.model import PERCENTILES, CompletionModel, size_class
from app.schedule.pricing import Workload

BASE = {**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "kind": ProviderKind.MINIMAX_T2A}
ADAPTIVE = ProviderSettings(
    **{**BASE, "first_poll_delay_s": 1.0, "min_poll_interval_s": 1.0, "max_poll_interval_s": 60.0}
)
# The hit chance alone, to check it apart from the expected-lateness rule.
CHANCE_ONLY = ADAPTIVE.model_copy(update={"poll_lateness_s": 0.0})
BACKOFF = ADAPTIVE.model_copy(update={"schedule": PollSchedule.BACKOFF})
FIXED = ADAPTIVE.model_copy(update={"schedule": PollSchedule.FIXED, "min_poll_interval_s": 5.0})


def uniform(low: float, high: float, samples: int = 100) -> CompletionModel:
    """Completions spread evenly over [low, high]: the CDF is a straight line."""
    return CompletionModel.of([low + (high - low) * p for p in PERCENTILES], samples)


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
        ("age", "expected"),
        [(0.0, 0.0), (10.0, 0.0), (20.0, 2.5), (30.0, 10.0), (40.0, 20.0)],
    )
    def test_integral_of_the_cdf(self, age: float, expected: float) -> None:
        # (t - 10) / 20 integrated from 10; past 30 the CDF is 1.
        assert uniform(10, 30).integral(age) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("age", "at", "expected"),
        [
            (0.0, 20.0, 2.5),  # half finish by 20 s, on average 5 s before it
            (20.0, 30.0, 5.0),  # the rest finish evenly over 20..30 s
            (0.0, 40.0, 20.0),  # everything is done by 30 s, the mean at 20 s
            (15.0, 15.0, 0.0),
            (25.0, 20.0, 0.0),
        ],
    )
    def test_lateness(self, age: float, at: float, expected: float) -> None:
        assert uniform(10, 30).lateness(age, at) == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("age", "lateness", "expected"),
        [
            (0.0, 2.5, 20.0),
            (20.0, 5.0, 30.0),
            (0.0, 20.0, 40.0),  # past the last completion seen lateness grows 1 s a second
            (0.0, 0.0, 0.0),
            (12.0, 0.0, 12.0),
            (29.8, 1.0, None),  # outlived 99 % of the completions seen
        ],
    )
    def test_lateness_age_inverts_lateness(
        self, age: float, lateness: float, expected: float | None
    ) -> None:
        got = uniform(10, 30).lateness_age(age, lateness)
        assert got == (pytest.approx(expected) if expected is not None else None)

    @pytest.mark.parametrize("age", [0.0, 14.0, 15.0, 17.3, 24.9, 26.0, 90.0, 150.0])
    @pytest.mark.parametrize("lateness", [0.05, 0.5, 2.0, 30.0])
    def test_lateness_age_on_a_skewed_model(self, age: float, lateness: float) -> None:
        at = SKEWED.lateness_age(age, lateness)
        assert at is not None
        assert at >= age
        assert SKEWED.lateness(age, at) == pytest.approx(lateness, rel=1e-9)

    def test_lateness_of_a_step(self) -> None:
        # Every task took exactly 12 s: by 13 s a task has been done for 1 s.
        model = CompletionModel.of([12.0] * 101, 40)
        assert model.lateness_age(0.0, 1.0) == pytest.approx(13.0)
        assert model.lateness(0.0, 12.0) == 0.0

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
    assert size_class(hint) == expected


class TestPlanNext:
    def test_fixed_polls_at_the_minimum_interval(self) -> None:
        delay = plans.plan_next(FIXED, age_s=100, unchanged_polls=7, model=SKEWED, hit_chance=0.5)
        assert delay == 5.0

    @pytest.mark.parametrize("unchanged", [0, 1, 3, 20])
    def test_backoff_follows_the_curve(self, unchanged: int) -> None:
        delay = plans.plan_next(BACKOFF, age_s=5, unchanged_polls=unchanged, model=SKEWED)
        assert delay == plans.unchanged_delay(BACKOFF, unchanged)

    def test_adaptive_without_a_model_falls_back_to_the_curve(self) -> None:
        delay = plans.plan_next(ADAPTIVE, age_s=5, unchanged_polls=2, model=None, hit_chance=0.6)
        assert delay == plans.unchanged_delay(ADAPTIVE, 2)

    @pytest.mark.parametrize("age", [183.0, 199.0, 500.0])
    def test_adaptive_past_the_99th_percentile_falls_back_to_the_curve(self, age: float) -> None:
        delay = plans.plan_next(ADAPTIVE, age_s=age, unchanged_polls=3, model=SKEWED)
        assert delay == plans.unchanged_delay(ADAPTIVE, 3)

    def test_no_bunching_before_the_longest_completion_seen(self) -> None:
        # Walk a task that never finishes through the tail: intervals never collapse.
        age, unchanged, delays = 30.0, 0, []
        while age < 400:
            delay = plans.plan_next(ADAPTIVE, age_s=age, unchanged_polls=unchanged, model=SKEWED)
            delays.append(delay)
            age += delay
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
    def test_the_hit_chance_polls_where_completion_is_likely(
        self, age: float, expected: float
    ) -> None:
        delay = plans.plan_next(CHANCE_ONLY, age_s=age, unchanged_polls=0, model=SKEWED)
        assert delay == pytest.approx(expected, rel=1e-3)

    @pytest.mark.parametrize("age", [0.0, 14.0, 17.5, 22.0, 40.0])
    @pytest.mark.parametrize("lateness", [0.0, 0.5, 3.0])
    def test_each_planned_poll_meets_both_rules(self, age: float, lateness: float) -> None:
        settings = ADAPTIVE.model_copy(update={"poll_lateness_s": lateness})
        delay = plans.plan_next(settings, age_s=age, unchanged_polls=0, model=SKEWED)
        if not settings.min_poll_interval_s < delay < settings.max_poll_interval_s:
            return  # a bound moved the poll
        done, later = SKEWED.cdf(age), SKEWED.cdf(age + delay)
        chance = (later - done) / (1 - done)
        late = SKEWED.lateness(age, age + delay)
        assert chance >= settings.poll_hit_chance - 1e-9
        assert late >= lateness - 1e-9
        # ... and the later of the two decides: one of them is met exactly.
        assert chance == pytest.approx(settings.poll_hit_chance, abs=1e-9) or late == (
            pytest.approx(lateness, abs=1e-9)
        )

    def test_lateness_spaces_polls_where_completions_are_dense(self) -> None:
        # A sharp distribution (a size class): 20 % of what is left finishes within half a
        # second, so the hit chance alone would poll every min_poll_interval_s.
        sharp = uniform(19.0, 21.0)
        assert plans.plan_next(CHANCE_ONLY, age_s=19.5, unchanged_polls=0, model=sharp) == 1.0
        spaced = plans.plan_next(ADAPTIVE, age_s=19.5, unchanged_polls=0, model=sharp)
        assert spaced > 1.0
        assert sharp.lateness(19.5, 19.5 + spaced) == pytest.approx(ADAPTIVE.poll_lateness_s)

    @pytest.mark.parametrize("age", [0.0, 10.0, 15.5, 19.0, 24.9, 30.0, 150.0, 199.0])
    @pytest.mark.parametrize("hit_chance", [None, 0.05, 0.3, 0.6, 0.99])
    def test_every_delay_is_within_the_bounds(self, age: float, hit_chance: float | None) -> None:
        delay = plans.plan_next(
            ADAPTIVE, age_s=age, unchanged_polls=0, model=SKEWED, hit_chance=hit_chance
        )
        assert ADAPTIVE.min_poll_interval_s <= delay <= ADAPTIVE.max_poll_interval_s

    def test_a_higher_hit_chance_polls_less_often(self) -> None:
        for age in (0.0, 16.0, 22.0):
            eager = plans.plan_next(CHANCE_ONLY, age_s=age, unchanged_polls=0, model=SKEWED)
            budgeted = plans.plan_next(
                CHANCE_ONLY, age_s=age, unchanged_polls=0, model=SKEWED, hit_chance=0.5
            )
            assert eager < budgeted


@pytest.mark.parametrize(
    ("own", "budgeted", "expected"),
    [
        (0.2, None, 0.2),  # no forecast yet
        (0.2, 0.1, 0.2),  # the budget never asks for more polls than the instance does
        (0.2, 0.45, 0.45),
        (0.2, 0.99, plans.MAX_HIT_CHANCE),  # past it the queue takes the excess
        (0.8, 0.3, 0.8),  # an instance configured above the cap keeps its own
    ],
)
def test_effective_hit_chance(own: float, budgeted: float | None, expected: float) -> None:
    settings = ADAPTIVE.model_copy(update={"poll_hit_chance": own})
    assert plans.effective_hit_chance(settings, budgeted) == pytest.approx(expected)


class TestPlanFirst:
    def test_without_a_model_the_first_poll_delay(self) -> None:
        assert plans.plan_first(ADAPTIVE, None, hit_chance=0.6) == ADAPTIVE.first_poll_delay_s

    def test_with_a_model_where_the_first_completions_start(self) -> None:
        assert plans.plan_first(CHANCE_ONLY, SKEWED) == pytest.approx(SKEWED.quantile(0.2))
        assert plans.plan_first(CHANCE_ONLY, SKEWED, hit_chance=0.5) == pytest.approx(
            SKEWED.quantile(0.5)
        )

    def test_never_before_the_first_poll_delay(self) -> None:
        quick = uniform(0.1, 0.5)
        late_start = ADAPTIVE.model_copy(update={"first_poll_delay_s": 3.0})
        assert plans.plan_first(late_start, quick) == 3.0

    def test_never_later_than_the_longest_interval(self) -> None:
        slow = uniform(3600, 7200)
        assert plans.plan_first(ADAPTIVE, slow, hit_chance=0.6) == 60.0

    def test_backoff_and_fixed_ignore_the_model(self) -> None:
        for settings in (BACKOFF, FIXED):
            assert plans.plan_first(settings, SKEWED) == settings.first_poll_delay_s


@pytest.mark.parametrize(
    ("model", "age", "expected"),
    [(None, 0.0, None), (SKEWED, 0.0, 20.556), (SKEWED, 20.0, 23.056), (SKEWED, 300.0, None)],
)
def test_estimated_ready_age(model: CompletionModel | None, age: float, expected: float) -> None:
    got = plans.estimated_ready_age(model, age)
    assert got == (pytest.approx(expected, rel=1e-3) if expected is not None else None)


def walk(
    settings: ProviderSettings, model: CompletionModel, hit_chance: float | None
) -> list[float]:
    """The ages at which a task that never finishes would be polled (up to 1 h)."""
    ages = [plans.plan_first(settings, model, hit_chance)]
    while ages[-1] < 3600:
        ages.append(
            ages[-1]
            + plans.plan_next(
                settings,
                age_s=ages[-1],
                unchanged_polls=len(ages) - 1,  # the first poll finds the task started
                model=model,
                hit_chance=hit_chance,
            )
        )
    return ages


class TestScheduleCost:
    def test_fixed_polling_of_an_even_spread(self) -> None:
        # Polls at 5, 10, 15 ... s; completions spread evenly over 10..30 s. Every task is
        # polled at 5, 10 and 15 s, three quarters at 20 s, half at 25, a quarter at 30:
        # 4.5 polls; a completion waits 2.5 s on average for the next poll.
        model = uniform(10, 30)
        fixed = FIXED.model_copy(update={"first_poll_delay_s": 5.0})
        cost = pricing.schedule_cost(fixed, model)
        assert cost.polls == pytest.approx(4.5)
        assert cost.delay_s == pytest.approx(2.5)

    @pytest.mark.parametrize("settings", [ADAPTIVE, CHANCE_ONLY, BACKOFF, FIXED])
    @pytest.mark.parametrize("hit_chance", [None, 0.4])
    def test_agrees_with_walking_every_completion(
        self, settings: ProviderSettings, hit_chance: float | None
    ) -> None:
        # The expectation over the model, against 20,000 completions drawn at its
        # percentiles and the poll ages the plan gives a task that has not finished.
        ages = walk(settings, SKEWED, hit_chance)
        polls = delay = 0.0
        draws = 20_000
        for i in range(draws):
            finished = SKEWED.quantile((i + 0.5) / draws)
            k = next(k for k, at in enumerate(ages) if at >= finished)
            polls += k + 1
            delay += ages[k] - finished
        cost = pricing.schedule_cost(settings, SKEWED, hit_chance)
        assert cost.polls == pytest.approx(polls / draws, rel=0.01)
        assert cost.delay_s == pytest.approx(delay / draws, rel=0.01)

    def test_a_plan_longer_than_the_walk_is_priced_in_closed_form(self) -> None:
        # Polls every 5 s; completions spread evenly over 1000..2000 s: 200 polls before
        # the first completion, then on average 100 more, and 2.5 s of delay. The walk
        # stops at MAX_WALKED_POLLS and prices the rest.
        model = uniform(1000, 2000)
        short = ADAPTIVE.model_copy(update={"min_poll_interval_s": 5.0, "max_poll_interval_s": 5.0})
        cost = pricing.schedule_cost(short, model)
        assert cost.polls == pytest.approx(300, rel=0.02)
        assert cost.delay_s == pytest.approx(2.5, rel=0.05)

    def test_completions_at_age_zero_wait_for_the_first_poll(self) -> None:
        # Every task finished at once (a model that is all zeros): one poll, at the first
        # poll delay, and that long a wait.
        instant = CompletionModel.of([0.0] * 101, 50)
        cost = pricing.schedule_cost(ADAPTIVE, instant)
        assert cost.polls == 1.0
        assert cost.delay_s == pytest.approx(plans.plan_first(ADAPTIVE, instant))

    def test_a_higher_hit_chance_costs_fewer_polls_and_more_delay(self) -> None:
        costs = [pricing.schedule_cost(ADAPTIVE, SKEWED, q) for q in (0.2, 0.3, 0.45, 0.6)]
        for cheaper, dearer in zip(costs[1:], costs, strict=False):
            assert cheaper.polls < dearer.polls
            assert cheaper.delay_s > dearer.delay_s


# Tasks finishing at 3 a second, distributed like SKEWED.
BUSY = [Workload(3.0, SKEWED)]


def test_demand_is_rate_times_polls_per_task() -> None:
    per_task = pricing.schedule_cost(ADAPTIVE, SKEWED).polls
    assert pricing.demand(BUSY, ADAPTIVE) == pytest.approx(3.0 * per_task)
    assert pricing.demand([*BUSY, Workload(0.0, SKEWED)], ADAPTIVE) == pytest.approx(3.0 * per_task)


class TestSolveHitChance:
    def test_the_instances_own_when_demand_fits(self) -> None:
        assert pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity_per_s=100) == 0.2

    def test_without_a_budget_or_a_workload(self) -> None:
        assert pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity_per_s=0) == 0.2
        assert pricing.solve_hit_chance([], ADAPTIVE, capacity_per_s=1) == 0.2

    @pytest.mark.parametrize("settings", [FIXED, BACKOFF])
    def test_only_adaptive_plans_change(self, settings: ProviderSettings) -> None:
        chance = pricing.solve_hit_chance(BUSY, settings, capacity_per_s=1)
        assert chance == settings.poll_hit_chance

    def test_the_lowest_hit_chance_that_fits(self) -> None:
        wanted = pricing.demand(BUSY, ADAPTIVE)
        capacity = wanted * 0.9
        chance = pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity)
        budget = pricing.poll_budget(capacity)
        assert 0.2 < chance < plans.MAX_HIT_CHANCE
        assert pricing.demand(BUSY, ADAPTIVE, chance) <= budget
        lower = chance - pricing.HIT_CHANCE_RESOLUTION
        assert pricing.demand(BUSY, ADAPTIVE, lower) > budget  # no higher than needed

    def test_when_even_the_highest_does_not_fit(self) -> None:
        assert pricing.solve_hit_chance(BUSY, ADAPTIVE, 0.5) == plans.MAX_HIT_CHANCE

    def test_an_overdue_backlog_raises_it(self) -> None:
        capacity = pricing.demand(BUSY, ADAPTIVE) * 0.8
        calm = pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity)
        behind = pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity, overdue=200)
        assert behind > calm


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
    got = poll_capacity(rate, spacing_factor=1.05, follow_ups_per_s=follow_ups)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("capacity", "overdue", "expected"),
    [
        (10.0, 0, 9.0),  # TARGET_UTILISATION of the capacity
        (10.0, 240, 7.0),  # 240 overdue tasks drain over 120 s: 2/s less for planned polls
        (10.0, 100_000, 0.9),  # never below a tenth
        (10.0, -5, 9.0),
    ],
)
def test_poll_budget_leaves_room_to_drain_the_overdue(
    capacity: float, overdue: int, expected: float
) -> None:
    assert pricing.poll_budget(capacity, overdue) == pytest.approx(expected)


class TestSaturation:
    def test_below_the_budget(self) -> None:
        forecast = pricing.saturation(BUSY, ADAPTIVE, capacity_per_s=100)
        cost = pricing.schedule_cost(ADAPTIVE, SKEWED)
        assert forecast.demand_per_s == pytest.approx(3.0 * cost.polls)
        assert forecast.ratio == pytest.approx(3.0 * cost.polls / 100)
        assert forecast.hit_chance == 0.2
        assert forecast.expected_detection_delay_s == pytest.approx(cost.delay_s)

    def test_saturated_adaptive_polls_later_and_says_how_late(self) -> None:
        calm = pricing.saturation(BUSY, ADAPTIVE, capacity_per_s=100)
        capacity = calm.demand_per_s * 0.9
        forecast = pricing.saturation(BUSY, ADAPTIVE, capacity_per_s=capacity)
        assert forecast.demand_per_s == pytest.approx(calm.demand_per_s)  # at its own chance
        assert forecast.ratio == pytest.approx(1 / 0.9)
        assert forecast.hit_chance > 0.2
        assert forecast.expected_detection_delay_s == pytest.approx(
            pricing.schedule_cost(ADAPTIVE, SKEWED, forecast.hit_chance).delay_s
        )
        assert forecast.expected_detection_delay_s > calm.expected_detection_delay_s  # type: ignore[operator]

    def test_beyond_the_highest_hit_chance_the_backlog_adds_its_wait(self) -> None:
        fitted = pricing.demand(BUSY, ADAPTIVE, plans.MAX_HIT_CHANCE)
        forecast = pricing.saturation(BUSY, ADAPTIVE, capacity_per_s=fitted / 2)
        planned = pricing.schedule_cost(ADAPTIVE, SKEWED, plans.MAX_HIT_CHANCE).delay_s
        assert forecast.hit_chance == plans.MAX_HIT_CHANCE
        # Twice what the capacity gives: the backlog grows at the excess for BACKLOG_DRAIN_S.
        assert forecast.expected_detection_delay_s == pytest.approx(
            planned + pricing.BACKLOG_DRAIN_S
        )

    def test_classes_are_weighted_by_their_rate(self) -> None:
        quick, slow = uniform(5, 10), uniform(100, 200)
        forecast = pricing.saturation(
            [Workload(3.0, quick), Workload(1.0, slow)], ADAPTIVE, capacity_per_s=100
        )
        delays = [pricing.schedule_cost(ADAPTIVE, m).delay_s for m in (quick, slow)]
        assert forecast.expected_detection_delay_s == pytest.approx((3 * delays[0] + delays[1]) / 4)

    def test_unlimited_instance_has_no_ratio(self) -> None:
        forecast = pricing.saturation(BUSY, ADAPTIVE, capacity_per_s=0)
        assert forecast.ratio == 0.0
        assert forecast.expected_detection_delay_s is None

    def test_before_anything_is_learned_the_planned_intervals(self) -> None:
        # 50 tasks planned 10 s apart against 10 polls/s: half the budget.
        forecast = pricing.saturation([], ADAPTIVE, capacity_per_s=10, planned=[(10.0, 50)])
        assert forecast.demand_per_s == pytest.approx(5.0)
        assert forecast.ratio == pytest.approx(0.5)
        assert forecast.hit_chance == 0.2
        assert forecast.expected_detection_delay_s == pytest.approx(5.0)

    def test_no_active_tasks(self) -> None:
        forecast = pricing.saturation([], ADAPTIVE, capacity_per_s=10)
        assert (forecast.demand_per_s, forecast.ratio) == (0.0, 0.0)
        assert forecast.expected_detection_delay_s is None


def test_fairness_bound_holds_whatever_the_budget() -> None:
    """However tight the budget, no planned delay exceeds max_poll_interval_s: a task then
    waits at most that plus its turn in the longest-overdue-first backlog."""
    for capacity in (0.01, 0.5, 3.0, 10.0, 1000.0):
        chance = pricing.solve_hit_chance(BUSY, ADAPTIVE, capacity)
        for age in (0.0, 5.0, 17.0, 40.0, 180.0, 1000.0):
            delay = plans.plan_next(
                ADAPTIVE, age_s=age, unchanged_polls=9, model=SKEWED, hit_chance=chance
            )
            assert delay <= ADAPTIVE.max_poll_interval_s
        assert plans.plan_first(ADAPTIVE, SKEWED, chance) <= ADAPTIVE.max_poll_interval_s


class TestPricedWorkloads:
    QUICK, SLOW = uniform(5, 10), uniform(100, 200)

    def model_for(self, size_class: int | None) -> CompletionModel | None:
        return {None: self.SLOW, 19: self.QUICK}.get(size_class, self.SLOW)

    def test_each_class_with_its_model_or_the_instances(self) -> None:
        found = pricing.priced_workloads(self.model_for, {None: 1.0, 19: 2.0, 25: 0.5}, active=9)
        assert found == [
            Workload(1.0, self.SLOW),
            Workload(2.0, self.QUICK),
            Workload(0.5, self.SLOW),  # class 25 has not learned its own yet
        ]

    def test_classes_that_finished_nothing_ask_for_nothing(self) -> None:
        assert pricing.priced_workloads(self.model_for, {19: 0.0, 25: 1.0}, active=3) == [
            Workload(1.0, self.SLOW)
        ]

    def test_without_recent_completions_littles_law_prices_the_tasks_in_flight(self) -> None:
        # 300 tasks in flight whose mean duration is 150 s finish at 2 a second.
        found = pricing.priced_workloads(self.model_for, {}, active=300)
        assert found == [Workload(pytest.approx(2.0), self.SLOW)]  # type: ignore[arg-type]
        assert pricing.priced_workloads(self.model_for, {}, active=0) == []

    def test_nothing_learned_nothing_priced(self) -> None:
        assert pricing.priced_workloads(lambda _: None, {None: 3.0}, active=50) == []
