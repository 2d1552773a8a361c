"""The learned completion-time distribution (app/schedule/model.py): its CDF, quantiles and
expected lateness, and the size classes it is learned per. No timing involved."""

from __future__ import annotations

import pytest

from app.schedule.model import CompletionModel, size_class
from tests.schedule.support import SKEWED, uniform


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
