"""Poll plans (app/schedule/plans.py): the backoff curve, error delays, jitter, the deadline
and the floor, and where an adaptive plan polls on a learned distribution. No timing
involved."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from app.core.config import KIND_DEFAULTS, PollSchedule, ProviderKind, ProviderSettings
from app.schedule import plans
from app.schedule.model import CompletionModel
from tests.schedule.support import ADAPTIVE, BACKOFF, CHANCE_ONLY, FIXED, SKEWED, uniform

MINIMAX = ProviderSettings(kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A])
JIMMY = ProviderSettings(
    kind=ProviderKind.JIMMY_SOUNDCLONE, **KIND_DEFAULTS[ProviderKind.JIMMY_SOUNDCLONE]
)


@pytest.mark.parametrize(
    ("settings", "unchanged", "expected"),
    [
        (MINIMAX, 0, 3.0),
        (MINIMAX, 1, 4.5),
        (MINIMAX, 2, 6.75),
        (MINIMAX, 5, 22.78125),
        (MINIMAX, 6, 30.0),  # capped at max_poll_interval_s
        (MINIMAX, 500, 30.0),
        (MINIMAX, -3, 3.0),
        (JIMMY, 0, 5.0),
        (JIMMY, 1, 7.5),
        (JIMMY, 2, 10.0),  # Jimmy's documented 5-10 s window
        (JIMMY, 50, 10.0),
    ],
)
def test_unchanged_delay(settings: ProviderSettings, unchanged: int, expected: float) -> None:
    assert plans.unchanged_delay(settings, unchanged) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("settings", "errors", "retry_after", "expected"),
    [
        (MINIMAX, 1, None, 3.0),
        (MINIMAX, 2, None, 6.0),
        (MINIMAX, 3, None, 12.0),
        (MINIMAX, 6, None, 96.0),
        (MINIMAX, 7, None, 120.0),  # 4 x max_poll_interval_s
        (MINIMAX, 60, None, 120.0),
        (MINIMAX, 1, 30.0, 30.0),  # Retry-After wins when longer
        (MINIMAX, 3, 1.0, 12.0),  # ...never shortens the backoff
        (MINIMAX, 1, 10_000.0, 3600.0),  # clamped
        (JIMMY, 10, None, 40.0),
    ],
)
def test_error_delay(
    settings: ProviderSettings, errors: int, retry_after: float | None, expected: float
) -> None:
    assert plans.error_delay(settings, errors, retry_after) == pytest.approx(expected)


def test_jitter_bounds_and_spread() -> None:
    rng = random.Random(7)
    values = [plans.jittered(10.0, rng) for _ in range(2000)]
    assert min(values) >= 9.0
    assert max(values) <= 11.0
    assert max(values) - min(values) > 1.5  # actually spreads


@pytest.mark.parametrize(
    ("delay", "deadline_in", "floor", "expected_min", "expected_max"),
    [
        (10.0, 100.0, 3.0, 9.0, 11.0),
        (10.0, 5.0, 3.0, 5.0, 5.0),  # never past the deadline: the last poll happens there
        (10.0, 2.0, 3.0, 3.0, 3.0),  # ...unless the floor is further: the floor wins
        (5.0, 100.0, 5.0, 5.0, 5.5),  # Jimmy: jitter never takes a gap under 5 s
        (0.0, 5.0, 0.0, 0.0, 0.0),
    ],
)
def test_next_poll_at_respects_deadline_and_floor(
    delay: float, deadline_in: float, floor: float, expected_min: float, expected_max: float
) -> None:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    deadline = now + timedelta(seconds=deadline_in)
    for seed in range(50):
        at = plans.next_poll_at(now, delay, deadline, random.Random(seed), floor_s=floor)
        assert now + timedelta(seconds=expected_min) <= at <= now + timedelta(seconds=expected_max)


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


CALLED_BACK = MINIMAX.model_copy(
    update={
        "callback_secret": SecretStr("a-token-of-at-least-24-characters"),
        "callback_poll_stretch": 4.0,
    }
)


@pytest.mark.parametrize(
    ("settings", "unchanged", "model", "expected"),
    [
        # Polled alone: the plans as they are.
        (MINIMAX, 0, None, 3.0),
        (MINIMAX, 9, None, 30.0),
        # With callbacks on, every planned wait is stretched, the ceiling too.
        (CALLED_BACK, 0, None, 12.0),
        (CALLED_BACK, 9, None, 120.0),
        (CALLED_BACK.model_copy(update={"schedule": PollSchedule.FIXED}), 3, None, 12.0),
    ],
)
def test_callbacks_stretch_every_planned_poll(
    settings: ProviderSettings, unchanged: int, model: CompletionModel | None, expected: float
) -> None:
    assert plans.plan_next(settings, age_s=60, unchanged_polls=unchanged, model=model) == (
        pytest.approx(expected)
    )
    assert plans.ceiling_s(settings) == settings.max_poll_interval_s * plans.stretch(settings)


def test_callbacks_stretch_the_first_poll_and_adaptive_plans() -> None:
    assert plans.plan_first(CALLED_BACK, None) == pytest.approx(4 * plans.plan_first(MINIMAX, None))
    model = uniform(10, 60)
    alone = plans.plan_next(MINIMAX, age_s=20, unchanged_polls=1, model=model)
    assert plans.plan_next(CALLED_BACK, age_s=20, unchanged_polls=1, model=model) == (
        pytest.approx(4 * alone)
    )
