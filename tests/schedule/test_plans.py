from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.schedule import plans

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
