"""How much of an instance's rate is left for status polls (app/budget/capacity.py)."""

from __future__ import annotations

import pytest

from app.budget.capacity import poll_capacity


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
