"""Quantiles read from bucket counts: app/overview/distributions.py, pure, as a table."""

from __future__ import annotations

import pytest

from app.overview.distributions import quantile

BOUNDS = (1.0, 2.0, 5.0)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        # Nothing observed: no quantile rather than a made-up 0.
        (0.5, [0, 0, 0, 0], None),
        # Linear within the bucket the rank falls in, from 0 for the first.
        (0.5, [10, 0, 0, 0], 0.5),
        (0.5, [0, 10, 0, 0], 1.5),
        (0.9, [5, 5, 0, 0], 1.8),
        (0.5, [2, 0, 2, 0], 1.0),
        (0.75, [2, 0, 2, 0], 3.5),
        # Above the last bound: the last bound, the most the buckets can say.
        (0.99, [0, 0, 0, 3], 5.0),
        (0.5, [1, 0, 0, 3], 5.0),
    ],
)
def test_quantiles_of_buckets(q: float, counts: list[int], expected: float | None) -> None:
    found = quantile(q, BOUNDS, counts)
    assert found == (None if expected is None else pytest.approx(expected))
