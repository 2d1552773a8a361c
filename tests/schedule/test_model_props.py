"""Properties of the learned completion-time distribution (app/schedule/model.py), for any
learned percentiles."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from app.schedule.model import TRUSTED_UP_TO, CompletionModel, size_class
from tests.properties import PROPERTY
from tests.schedule.support import chances, models, seconds


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
@given(st.integers(min_value=1, max_value=10**12))
def test_size_classes_are_ordered_half_octaves(hint: int) -> None:
    cls = size_class(hint)
    assert cls is not None
    assert cls >= 0
    assert size_class(hint * 2) == cls + 2
