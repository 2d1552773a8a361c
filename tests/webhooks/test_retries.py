"""Delivery retry decisions (app/webhooks/retries.py) as a table, the jitter, and the length
of the whole schedule."""

from __future__ import annotations

import random

import pytest

from app.webhooks.retries import DEFAULT_SCHEDULE_S, AttemptResult, Decision, Verdict, decide


class _Mid(random.Random):
    """jitter = 0 exactly, so table rows state exact delays."""

    def uniform(self, a: float, b: float) -> float:
        return 0.0


@pytest.mark.parametrize(
    ("result", "attempts", "expected"),
    [
        (AttemptResult(200), 1, Decision(Verdict.DELIVERED)),
        (AttemptResult(204), 3, Decision(Verdict.DELIVERED)),
        (AttemptResult(299), 8, Decision(Verdict.DELIVERED)),
        (AttemptResult(410), 1, Decision(Verdict.ENDPOINT_GONE)),
        (AttemptResult(500), 1, Decision(Verdict.RETRY, 5.0)),
        (AttemptResult(500), 2, Decision(Verdict.RETRY, 300.0)),
        (AttemptResult(500), 3, Decision(Verdict.RETRY, 1800.0)),
        (AttemptResult(500), 4, Decision(Verdict.RETRY, 7200.0)),
        (AttemptResult(500), 5, Decision(Verdict.RETRY, 18000.0)),
        (AttemptResult(500), 6, Decision(Verdict.RETRY, 36000.0)),
        (AttemptResult(500), 7, Decision(Verdict.RETRY, 36000.0)),
        (AttemptResult(500), 8, Decision(Verdict.GIVE_UP)),
        (AttemptResult(301), 1, Decision(Verdict.RETRY, 5.0)),  # redirects are failures
        (AttemptResult(404), 1, Decision(Verdict.RETRY, 5.0)),
        (AttemptResult(None, error="connection refused"), 1, Decision(Verdict.RETRY, 5.0)),
        (AttemptResult(200, error="body too large"), 1, Decision(Verdict.RETRY, 5.0)),
        # at least 60 s after a 429 or a timeout
        (AttemptResult(429), 1, Decision(Verdict.RETRY, 60.0)),
        (AttemptResult(429), 3, Decision(Verdict.RETRY, 1800.0)),
        (AttemptResult(None, error="timeout", timed_out=True), 1, Decision(Verdict.RETRY, 60.0)),
        # Retry-After honoured within [scheduled, 2 x scheduled]
        (AttemptResult(503, retry_after_s=8), 1, Decision(Verdict.RETRY, 8.0)),
        (AttemptResult(503, retry_after_s=3600), 1, Decision(Verdict.RETRY, 10.0)),
        (AttemptResult(503, retry_after_s=1), 2, Decision(Verdict.RETRY, 300.0)),
        (AttemptResult(429, retry_after_s=30), 1, Decision(Verdict.RETRY, 60.0)),
        (AttemptResult(429, retry_after_s=500), 2, Decision(Verdict.RETRY, 500.0)),
    ],
)
def test_retry_schedule(result: AttemptResult, attempts: int, expected: Decision) -> None:
    assert decide(result, attempts, DEFAULT_SCHEDULE_S, _Mid()) == expected


def test_jitter_is_within_twenty_percent() -> None:
    rng = random.Random(3)
    delays = [decide(AttemptResult(500), 2, DEFAULT_SCHEDULE_S, rng).delay_s for _ in range(500)]
    assert all(d is not None and 240 <= d <= 360 for d in delays)
    assert max(d for d in delays if d) - min(d for d in delays if d) > 60


def test_the_whole_schedule_spans_about_27_hours() -> None:
    total = sum(DEFAULT_SCHEDULE_S)
    assert len(DEFAULT_SCHEDULE_S) == 8
    assert 27 * 3600 < total < 28 * 3600
