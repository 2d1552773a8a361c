from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.archive.retries import MAX_DELAY_S, Reason, decide

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=9)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("reason", "attempts", "deadline", "retry_at", "final_reason"),
    [
        # Retried, doubling from the base, capped.
        (Reason.HTTP_ERROR, 1, LATER, at(5), Reason.HTTP_ERROR),
        (Reason.UNREACHABLE, 3, LATER, at(20), Reason.UNREACHABLE),
        (Reason.STORE, 30, LATER, at(MAX_DELAY_S), Reason.STORE),
        # Never retried: nothing would change.
        (Reason.REFUSED, 1, LATER, None, Reason.REFUSED),
        (Reason.TOO_LARGE, 1, LATER, None, Reason.TOO_LARGE),
        (Reason.BAD_BUNDLE, 1, LATER, None, Reason.BAD_BUNDLE),
        (Reason.EXPIRED, 1, LATER, None, Reason.EXPIRED),
        # The URL is dead: a deadline miss, whatever the error was.
        (Reason.HTTP_ERROR, 1, NOW, None, Reason.EXPIRED),
        (Reason.HTTP_ERROR, 1, at(-1), None, Reason.EXPIRED),
        # The next try would fall past the deadline: one last try base_s before it...
        (Reason.HTTP_ERROR, 10, at(60), at(55), Reason.HTTP_ERROR),
        # ... and none when even that has gone by.
        (Reason.HTTP_ERROR, 10, at(4), None, Reason.EXPIRED),
    ],
)
def test_decide(
    reason: Reason,
    attempts: int,
    deadline: datetime,
    retry_at: datetime | None,
    final_reason: Reason,
) -> None:
    decision = decide(reason, attempts, NOW, deadline, 5.0)
    assert decision.retry_at == retry_at
    assert decision.reason is final_reason


def test_retries_end_before_the_deadline() -> None:
    """Following the decisions from the first failure, tries stay before the deadline and
    end in a bounded number."""
    now, attempts, deadline = NOW, 0, at(3600)
    while True:
        attempts += 1
        decision = decide(Reason.UNREACHABLE, attempts, now, deadline, 5.0)
        if decision.retry_at is None:
            break
        assert now < decision.retry_at < deadline
        now = decision.retry_at
    assert decision.reason is Reason.EXPIRED
    assert attempts < 20
