"""The benchmarks' summary of the workers' send check to headers written delay."""

from __future__ import annotations

import pytest

from bench._support import send_delay_summary


def buckets(**counts: float) -> dict[str, float]:
    """Cumulative bucket counts by bound, as `poll_metrics` returns them (`le_0_005=3`)."""
    return {f"send delay le {k[3:].replace('_', '.')}": v for k, v in counts.items()}


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (
            buckets(le_0_001=50, le_0_005=99, le_0_017=100, le_0_025=100),
            {"requests": 100, "p50_le_s": 0.001, "p99_le_s": 0.005, "max_le_s": 0.017},
        ),
        (
            {**buckets(le_0_001=0, le_0_025=9, le_0_035=10), "slots minimax": 12.0},
            {"requests": 10, "p50_le_s": 0.025, "p99_le_s": 0.035, "max_le_s": 0.035},
        ),
        ({"slots minimax": 12.0}, {"requests": 0, "p50_le_s": 0, "p99_le_s": 0, "max_le_s": 0}),
    ],
)
def test_send_delay_summary(metrics: dict[str, float], expected: dict[str, float]) -> None:
    assert send_delay_summary(metrics) == expected
