"""What a poll plan costs, the hit chance the budget calls for and the saturation forecast
(app/schedule/pricing.py). No timing involved."""

from __future__ import annotations

import pytest

from app.core.config import ProviderSettings
from app.schedule import plans, pricing
from app.schedule.model import CompletionModel
from app.schedule.pricing import Workload
from tests.schedule.support import ADAPTIVE, BACKOFF, CHANCE_ONLY, FIXED, SKEWED, uniform


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
