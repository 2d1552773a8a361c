"""Delivery retry policy (pure; table-tested).

Attempts follow the schedule (by default Standard Webhooks' and Svix's: immediately, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h) with ±20 % jitter. A Retry-After answer is honoured but
clamped to [scheduled, 2 x scheduled], so a consumer can slow us down, not stall the queue
or make us hammer it. After a 429 or a timeout the next attempt waits at least 60 s: the
consumer is overloaded, and retrying fast makes that worse.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.20
OVERLOAD_FLOOR_S = 60.0


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"
    ENDPOINT_GONE = "endpoint_gone"


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt observed: an HTTP status, or an error before any status."""

    status_code: int | None
    error: str | None = None
    timed_out: bool = False
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay_s: float | None = None  # when verdict is RETRY


def classify(result: AttemptResult) -> Verdict | None:
    """DELIVERED / ENDPOINT_GONE, or None for a failure that may be retried."""
    code = result.status_code
    if code is not None and 200 <= code < 300 and result.error is None:
        return Verdict.DELIVERED
    if code == 410:
        return Verdict.ENDPOINT_GONE
    # Redirects are failures (never followed: a 3xx could point into a private network).
    return None


def decide(
    result: AttemptResult,
    attempts_made: int,
    schedule: Sequence[float],
    rng: random.Random,
    overload_floor_s: float = OVERLOAD_FLOOR_S,
) -> Decision:
    """What to do after attempt number `attempts_made` (1-based) ended with `result`."""
    verdict = classify(result)
    if verdict is not None:
        return Decision(verdict)
    if attempts_made >= len(schedule):
        return Decision(Verdict.GIVE_UP)
    scheduled = schedule[attempts_made]
    delay = scheduled * (1 + rng.uniform(-JITTER, JITTER))
    if result.retry_after_s is not None:
        delay = min(max(delay, result.retry_after_s), max(2 * scheduled, scheduled))
    if result.timed_out or result.status_code == 429:
        delay = max(delay, overload_floor_s)
    return Decision(Verdict.RETRY, max(0.0, delay))
