"""Properties of the delivery retry policy (app/webhooks/retries.py)."""

from __future__ import annotations

import math
import random

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.webhooks.retries import (
    DEFAULT_SCHEDULE_S,
    JITTER,
    OVERLOAD_FLOOR_S,
    AttemptResult,
    Verdict,
    classify,
    decide,
)
from tests.properties import PROPERTY

REL = 1e-9  # float rounding of scheduled * (1 ± jitter)

step = st.floats(min_value=0, max_value=1e6, allow_nan=False)
schedules = st.just(list(DEFAULT_SCHEDULE_S)) | st.lists(step, min_size=1, max_size=50)
status_codes = st.none() | st.integers(min_value=100, max_value=599)
retry_afters = (
    st.none()
    | st.floats(min_value=0, max_value=1e7, allow_nan=False)
    | st.floats(allow_nan=True, allow_infinity=True)
)
floors = st.just(OVERLOAD_FLOOR_S) | st.floats(min_value=0, max_value=1e5, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32)


@st.composite
def results(draw: st.DrawFn, codes: st.SearchStrategy[int | None] = status_codes) -> AttemptResult:
    return AttemptResult(
        status_code=draw(codes),
        error=draw(st.none() | st.text(max_size=20)),
        timed_out=draw(st.booleans()),
        retry_after_s=draw(retry_afters),
    )


def is_failure(result: AttemptResult) -> bool:
    code = result.status_code
    delivered = code is not None and 200 <= code < 300 and result.error is None
    return not delivered and code != 410


failures = results().filter(is_failure)


@settings(PROPERTY, max_examples=200)
@given(results(), st.integers(min_value=1, max_value=100), schedules, st.randoms())
def test_2xx_without_error_is_delivered_and_410_disables(
    result: AttemptResult, attempts: int, schedule: list[float], rng: random.Random
) -> None:
    decision = decide(result, attempts, schedule, rng)
    code = result.status_code
    if code is not None and 200 <= code < 300 and result.error is None:
        assert decision.verdict is Verdict.DELIVERED
    elif code == 410:
        assert decision.verdict is Verdict.ENDPOINT_GONE
    else:
        assert decision.verdict in (Verdict.RETRY, Verdict.GIVE_UP)
    assert (decision.delay_s is not None) == (decision.verdict is Verdict.RETRY)
    assert classify(result) == (None if is_failure(result) else decision.verdict)


@settings(PROPERTY, max_examples=100)
@given(results(st.integers(min_value=300, max_value=399)))
def test_redirects_are_never_delivered(result: AttemptResult) -> None:
    assert classify(result) is None


@settings(PROPERTY, max_examples=200)
@given(failures, schedules, st.data())
def test_a_failure_retries_until_the_schedule_ends_then_gives_up(
    result: AttemptResult, schedule: list[float], data: st.DataObject
) -> None:
    attempts = data.draw(st.integers(min_value=1, max_value=len(schedule) + 5))
    decision = decide(result, attempts, schedule, random.Random(0))
    if attempts < len(schedule):
        assert decision.verdict is Verdict.RETRY
    else:
        assert decision == decide(result, attempts, schedule, random.Random(1))
        assert decision.verdict is Verdict.GIVE_UP
        assert decision.delay_s is None


@settings(PROPERTY, max_examples=250)
@given(failures, schedules, floors, st.randoms(), st.data())
def test_retry_delay_stays_within_the_jittered_clamped_bounds(
    result: AttemptResult,
    schedule: list[float],
    floor: float,
    rng: random.Random,
    data: st.DataObject,
) -> None:
    assume(len(schedule) > 1)
    attempts = data.draw(st.integers(min_value=1, max_value=len(schedule) - 1))
    scheduled = schedule[attempts]
    decision = decide(result, attempts, schedule, rng, overload_floor_s=floor)
    delay = decision.delay_s
    assert decision.verdict is Verdict.RETRY
    assert delay is not None
    assert math.isfinite(delay)
    assert delay >= 0

    overloaded = result.timed_out or result.status_code == 429
    retry_after = result.retry_after_s
    low = scheduled * (1 - JITTER) * (1 - REL)
    high = scheduled * (1 + JITTER) * (1 + REL)
    if retry_after is not None:
        # A consumer may slow us down, up to twice the scheduled delay.
        high = max(high, 2 * scheduled)
        if not math.isnan(retry_after):
            low = max(low, min(retry_after, 2 * scheduled))
    if overloaded:
        low, high = max(low, floor), max(high, floor)
    assert low <= delay <= high


@settings(PROPERTY, max_examples=200)
@given(failures, st.lists(step, min_size=2, max_size=20).map(sorted), floors, seeds, st.data())
def test_delays_never_shrink_along_a_growing_schedule(
    result: AttemptResult, schedule: list[float], floor: float, seed: int, data: st.DataObject
) -> None:
    # Same jitter draw for both attempts, so only the schedule differs.
    a = data.draw(st.integers(min_value=1, max_value=len(schedule) - 1))
    b = data.draw(st.integers(min_value=a, max_value=len(schedule) - 1))
    first = decide(result, a, schedule, random.Random(seed), overload_floor_s=floor)
    later = decide(result, b, schedule, random.Random(seed), overload_floor_s=floor)
    assert first.delay_s is not None
    assert later.delay_s is not None
    assert first.delay_s <= later.delay_s


@settings(PROPERTY, max_examples=200)
@given(
    failures,
    schedules.filter(lambda s: len(s) > 1),
    st.floats(min_value=0, max_value=1e7, allow_nan=False),
    st.floats(min_value=0, max_value=1e7, allow_nan=False),
    seeds,
)
def test_a_longer_retry_after_never_shortens_the_delay(
    result: AttemptResult, schedule: list[float], ra1: float, ra2: float, seed: int
) -> None:
    shorter, longer = sorted((ra1, ra2))
    delays = [
        decide(
            AttemptResult(result.status_code, result.error, result.timed_out, retry_after),
            1,
            schedule,
            random.Random(seed),
        ).delay_s
        for retry_after in (shorter, longer)
    ]
    assert delays[0] is not None
    assert delays[1] is not None
    assert delays[0] <= delays[1]
