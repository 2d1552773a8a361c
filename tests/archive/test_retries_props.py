"""Properties of the archive's retry policy (app/archive/retries.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.archive.retries import FINAL, MAX_DELAY_S, Reason, decide
from tests.properties import PROPERTY

NOW = datetime(2026, 12, 4, tzinfo=UTC)
reasons = st.sampled_from(list(Reason))
attempts = st.integers(min_value=1, max_value=10_000)
# Where the deadline lies from now, in seconds: past, close and far.
deadlines = st.floats(min_value=-86_400, max_value=30 * 86_400, allow_nan=False)
bases = st.floats(min_value=0.001, max_value=3600, allow_nan=False)


@settings(PROPERTY)
@given(reasons, attempts, deadlines, bases)
def test_a_retry_is_never_past_the_deadline_nor_before_now(
    reason: Reason, attempt: int, until_s: float, base_s: float
) -> None:
    deadline = NOW + timedelta(seconds=until_s)
    decision = decide(reason, attempt, NOW, deadline, base_s)
    if decision.retry_at is None:
        assert decision.reason in FINAL
        return
    assert NOW <= decision.retry_at < deadline
    assert decision.retry_at - NOW <= timedelta(seconds=MAX_DELAY_S)
    assert reason not in FINAL
    assert decision.reason is reason


@settings(PROPERTY)
@given(reasons, deadlines, bases)
def test_following_the_decisions_always_ends(reason: Reason, until_s: float, base_s: float) -> None:
    """Retried from its first failure, a copy that keeps failing is given up in a bounded
    number of tries, by the deadline at the latest."""
    now, deadline = NOW, NOW + timedelta(seconds=until_s)
    for attempt in range(1, 100_000):
        decision = decide(reason, attempt, now, deadline, base_s)
        if decision.retry_at is None:
            return
        assert decision.retry_at > now or decision.retry_at == now
        now = max(decision.retry_at, now + timedelta(seconds=base_s / 2))
    raise AssertionError("never gave up")
