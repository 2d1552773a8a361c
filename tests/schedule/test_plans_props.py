"""Properties of poll plans (app/schedule/plans.py), for any bounds and, for adaptive plans,
any learned percentiles."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config import PollSchedule, ProviderSettings
from app.schedule import plans
from app.schedule.model import CompletionModel
from tests.properties import PROPERTY, provider_settings
from tests.schedule.support import adaptive_settings, hit_chances, models, seconds

# timedelta keeps microseconds, so a computed instant may be off by one rounding step.
ONE_US = timedelta(microseconds=1)
RETRY_AFTER_CAP_S = 3600.0


counters = st.integers(min_value=-5, max_value=1_000)
retry_afters = st.none() | st.floats(allow_nan=True) | st.floats(min_value=0, max_value=1e6)
delays = st.floats(min_value=0, max_value=7 * 86_400, allow_nan=False)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
offsets = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(
    lambda s: timedelta(seconds=s)
)


def error_cap(s: ProviderSettings) -> float:
    return max(
        min(plans.ERROR_BACKOFF_CAP_S, s.max_poll_interval_s * plans.ERROR_BACKOFF_CAP_FACTOR),
        s.min_poll_interval_s,
    )


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters)
def test_unchanged_delay_stays_within_the_interval_bounds(s: ProviderSettings, n: int) -> None:
    assert s.min_poll_interval_s <= plans.unchanged_delay(s, n) <= s.max_poll_interval_s


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters, counters)
def test_unchanged_delay_never_shrinks_as_nothing_changes(
    s: ProviderSettings, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    assert plans.unchanged_delay(s, low) <= plans.unchanged_delay(s, high)


@settings(PROPERTY)
@given(provider_settings())
def test_unchanged_delay_starts_at_min_and_reaches_max(s: ProviderSettings) -> None:
    assert plans.unchanged_delay(s, 0) == s.min_poll_interval_s
    assert plans.unchanged_delay(s, 64) == s.max_poll_interval_s


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters)
def test_error_delay_stays_within_min_and_the_error_cap(s: ProviderSettings, n: int) -> None:
    assert s.min_poll_interval_s <= plans.error_delay(s, n) <= error_cap(s)


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters, counters, retry_afters)
def test_error_delay_never_shrinks_as_errors_repeat(
    s: ProviderSettings, a: int, b: int, retry_after: float | None
) -> None:
    low, high = sorted((a, b))
    assert plans.error_delay(s, low, retry_after) <= plans.error_delay(s, high, retry_after)


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters, retry_afters)
def test_error_delay_honours_retry_after_up_to_its_cap(
    s: ProviderSettings, n: int, retry_after: float | None
) -> None:
    base = plans.error_delay(s, n)
    delay = plans.error_delay(s, n, retry_after)
    assert delay >= base
    assert delay <= max(base, RETRY_AFTER_CAP_S)
    if retry_after is not None and not math.isnan(retry_after):
        assert delay >= min(retry_after, RETRY_AFTER_CAP_S)


@settings(PROPERTY, max_examples=200)
@given(delays, st.randoms())
def test_jitter_stays_within_ten_percent(delay: float, rng: random.Random) -> None:
    jittered = plans.jittered(delay, rng)
    assert delay * (1 - plans.JITTER) - 1e-9 * delay <= jittered
    assert jittered <= delay * (1 + plans.JITTER) + 1e-9 * delay


floors = st.floats(min_value=0, max_value=86_400, allow_nan=False)


@settings(PROPERTY, max_examples=200)
@given(instants, delays, offsets, floors, st.randoms())
def test_next_poll_is_never_sooner_than_the_floor_and_past_the_deadline_by_at_most_it(
    now: datetime, delay: float, to_deadline: timedelta, floor: float, rng: random.Random
) -> None:
    deadline = now + to_deadline
    at = plans.next_poll_at(now, delay, deadline, rng, floor_s=floor)
    assert at >= now + timedelta(seconds=floor) - ONE_US
    if now < deadline:
        assert at <= max(deadline, now + timedelta(seconds=floor)) + ONE_US


@settings(PROPERTY, max_examples=200)
@given(instants, delays, offsets, st.randoms())
def test_next_poll_is_the_jittered_delay_unless_the_deadline_comes_first(
    now: datetime, delay: float, to_deadline: timedelta, rng: random.Random
) -> None:
    deadline = now + to_deadline
    at = plans.next_poll_at(now, delay, deadline, rng, floor_s=0.0)
    earliest = now + timedelta(seconds=delay * (1 - plans.JITTER)) - ONE_US
    latest = now + timedelta(seconds=delay * (1 + plans.JITTER)) + ONE_US
    if now < deadline:
        assert at == deadline or earliest <= at <= latest
        assert min(deadline, earliest) <= at
    else:
        assert earliest <= at <= latest


@settings(PROPERTY, max_examples=300)
@given(
    provider_settings(schedule=st.sampled_from(list(PollSchedule))),
    counters,
    retry_afters,
    st.booleans(),
    instants,
    offsets,
    st.randoms(),
)
def test_no_planned_gap_is_under_min_poll_interval_after_jitter(
    s: ProviderSettings,
    n: int,
    retry_after: float | None,
    after_error: bool,
    now: datetime,
    to_deadline: timedelta,
    rng: random.Random,
) -> None:
    """Whatever plans the delay (any schedule, error backoff, Retry-After) and wherever the
    deadline is, the next poll is at least min_poll_interval_s away."""
    if after_error:
        delay, ceiling = plans.error_delay(s, n, retry_after), None
    else:
        delay = plans.plan_next(s, age_s=abs(n), unchanged_polls=n, model=None)
        ceiling = s.max_poll_interval_s
    at = plans.next_poll_at(
        now, delay, now + to_deadline, rng, floor_s=s.min_poll_interval_s, ceiling_s=ceiling
    )
    assert at - now >= timedelta(seconds=s.min_poll_interval_s) - ONE_US


@settings(PROPERTY, max_examples=200)
@given(provider_settings(), counters, instants, st.randoms())
def test_next_poll_while_unchanged_is_within_the_interval_bounds(
    s: ProviderSettings, n: int, now: datetime, rng: random.Random
) -> None:
    deadline = now + timedelta(days=30)  # beyond any interval: the deadline does not bind
    at = plans.next_poll_at(
        now,
        plans.unchanged_delay(s, n),
        deadline,
        rng,
        floor_s=s.min_poll_interval_s,
        ceiling_s=s.max_poll_interval_s,
    )
    low = s.min_poll_interval_s
    high = s.max_poll_interval_s
    assert now + timedelta(seconds=low) - ONE_US <= at <= now + timedelta(seconds=high) + ONE_US


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
