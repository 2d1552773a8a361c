"""When to poll a task next (pure; table-tested).

While nothing changes upstream, the interval grows geometrically from the instance's
min_poll_interval_s to its max_poll_interval_s; a status change starts the curve again.
Transient failures back off on their own, longer curve, and a rate-limit answer's
Retry-After is honoured. Jitter (±10 %) keeps tasks registered together from polling in
lockstep. No delay ever carries a task past its deadline: the last poll happens there.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from app.core.config import ProviderSettings

GROWTH = 1.5
JITTER = 0.10
# Transient errors back off from min_poll_interval_s up to this multiple of the max interval.
ERROR_BACKOFF_CAP_FACTOR = 4.0
ERROR_BACKOFF_CAP_S = 300.0


def jittered(delay_s: float, rng: random.Random) -> float:
    return delay_s * (1 + rng.uniform(-JITTER, JITTER))


def unchanged_delay(settings: ProviderSettings, unchanged_polls: int) -> float:
    """The base interval after `unchanged_polls` polls that saw no change (0 = just changed)."""
    exponent = min(max(unchanged_polls, 0), 64)
    return min(settings.max_poll_interval_s, settings.min_poll_interval_s * GROWTH**exponent)


def error_delay(
    settings: ProviderSettings, consecutive_errors: int, retry_after_s: float | None = None
) -> float:
    """The base delay after `consecutive_errors` transient failures in a row (>= 1)."""
    cap = min(ERROR_BACKOFF_CAP_S, settings.max_poll_interval_s * ERROR_BACKOFF_CAP_FACTOR)
    cap = max(cap, settings.min_poll_interval_s)
    exponent = min(max(consecutive_errors - 1, 0), 64)
    delay = min(cap, settings.min_poll_interval_s * 2.0**exponent)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, 3600.0))
    return delay


def next_poll_at(
    now: datetime, delay_s: float, deadline_at: datetime, rng: random.Random
) -> datetime:
    at = now + timedelta(seconds=max(0.0, jittered(delay_s, rng)))
    return min(at, deadline_at) if now < deadline_at else at
