"""The offline scheduling model (bench/schedule_model.py) on short horizons: it detects
every measured task, never exceeds the budget, polls as fixed polling must, and its lower
bound's fast search agrees with a task-by-task recomputation. No timing assertions."""

from __future__ import annotations

import math
import statistics

import pytest

from bench import schedule_model as model
from bench.adaptive_schedule import (
    BUDGET_PER_S,
    DRAIN_MAX_S,
    FIXED_INTERVAL_S,
    VARIANTS,
    measured,
    workload,
)
from bench.schedule_model import Evaluation, Schedule, bound_sample, schedule_delays

# The shortest arrival window that still leaves a measured window after the warm-up and tail.
HORIZON_S = 240.0


def nearest_rank_p50(values: list[float]) -> float:
    return sorted(values)[math.ceil(len(values) / 2) - 1]


@pytest.mark.parametrize(
    ("inflight", "variant"),
    [(20, "fixed"), (20, "hints"), (100, "fixed"), (100, "adaptive"), (150, "hints")],
)
def test_every_measured_task_is_detected_within_the_budget(inflight: int, variant: str) -> None:
    result = model.simulate(inflight, VARIANTS[variant], seed=1, horizon_s=HORIZON_S)

    assert result.measured > 0
    assert result.undetected == 0
    assert result.peak_requests_1s <= BUDGET_PER_S


def test_fixed_polls_every_five_seconds() -> None:
    inflight, seed = 20, 2
    result = model.simulate(inflight, VARIANTS["fixed"], seed=seed, horizon_s=HORIZON_S)

    arrivals = workload(inflight, HORIZON_S + DRAIN_MAX_S, 1.0, seed + inflight)
    durations = [arrivals[i].duration_s for i in measured(arrivals, HORIZON_S, 1.0)]
    expected = statistics.fmean(durations) / FIXED_INTERVAL_S + 1
    assert result.polls_per_task == pytest.approx(expected, rel=0.2)


def test_peak_in_window_counts_a_sliding_second() -> None:
    slots = [i * model.SLOT_S for i in range(50)]
    assert model.peak_in_window(slots) == 10
    assert model.peak_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3


@pytest.mark.parametrize("sizes", [False, True])
def test_fast_evaluation_agrees_with_the_task_by_task_one(sizes: bool) -> None:
    sample = bound_sample(2_000, seed=3, sizes=sizes, horizon_s=HORIZON_S)
    evaluation = Evaluation(sample)
    schedules = model.UNITS_GRID[::97] if sizes else model.SECONDS_GRID[::1_931]
    for schedule in schedules:
        delays, polls = schedule_delays(schedule, sample)
        assert evaluation.polls(schedule) == pytest.approx(statistics.fmean(polls))
        assert evaluation.p50(schedule) == pytest.approx(nearest_rank_p50(delays))


@pytest.mark.parametrize("sizes", [False, True])
def test_the_bound_meets_its_constraints(sizes: bool) -> None:
    sample = bound_sample(2_000, seed=4, sizes=sizes, horizon_s=HORIZON_S)
    evaluation = Evaluation(sample)
    schedules = model.costed(evaluation, model.UNITS_GRID if sizes else model.SECONDS_GRID[::7])

    fastest = model.fewest_polls(evaluation, schedules, p50_s=2.5)
    assert fastest is not None
    delays, polls = schedule_delays(fastest.schedule, sample)
    assert nearest_rank_p50(delays) <= 2.5
    assert statistics.fmean(polls) == pytest.approx(fastest.polls_per_task)
    cheaper = [s for p, s in schedules if p < fastest.polls_per_task]
    assert all(evaluation.p50(s) > 2.5 for s in cheaper)

    cheapest = model.lowest_p50(evaluation, schedules, polls_per_task=2.0)
    assert cheapest is not None
    delays, polls = schedule_delays(cheapest.schedule, sample)
    assert statistics.fmean(polls) <= 2.0
    assert nearest_rank_p50(delays) == pytest.approx(cheapest.p50_s)
    affordable = [s for p, s in schedules if p <= 2.0]
    assert min(evaluation.p50(s) for s in affordable) == pytest.approx(cheapest.p50_s)


def test_a_schedule_describes_itself() -> None:
    schedule = Schedule(first=10.0, interval=2.0, dense_steps=5, growth=None)
    assert schedule.dense_until == 20.0
    assert schedule.ages(1.0, 100.0)[:7] == [10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 80.0]
    assert schedule.describe(" s") == "first poll at 10 s, every 2 s to 20 s, then every 60 s"
