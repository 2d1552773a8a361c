"""When a failed copy is tried again, and when it is given up: pure policy.

Each failure has a reason. Some can never succeed (the URL leads somewhere pollhook may not
go, the file is over the size cap, the bundle cannot be read) and end the copy at once;
the others (the provider answered an error, the network or the store failed) are retried
with doubling delays, but only while the source URL still works: a retry planned past its
deadline ends the copy as `expired`, a deadline miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# The longest wait between two tries: a URL that lives 9 hours gets well over 20.
MAX_DELAY_S = 1800.0


class Reason(StrEnum):
    REFUSED = "refused"
    TOO_LARGE = "too_large"
    EXPIRED = "expired"
    HTTP_ERROR = "http_error"
    UNREACHABLE = "unreachable"
    BAD_BUNDLE = "bad_bundle"
    STORE = "store"
    # Something of pollhook's own failed (its spool disk, a fault of its code): retried.
    INTERNAL = "internal"


FINAL = frozenset({Reason.REFUSED, Reason.TOO_LARGE, Reason.BAD_BUNDLE, Reason.EXPIRED})


@dataclass(frozen=True)
class Decision:
    """Try again at `retry_at`, or (None) give up for `reason`."""

    retry_at: datetime | None
    reason: Reason


def decide(
    reason: Reason, attempts: int, now: datetime, deadline: datetime, base_s: float
) -> Decision:
    """After the `attempts`-th failed try, for `reason`."""
    if reason in FINAL:
        return Decision(None, reason)
    if now >= deadline:
        return Decision(None, Reason.EXPIRED)
    # The exponent is capped: past it the delay is MAX_DELAY_S anyway, and 2 ** 1024 is
    # no float.
    delay = min(base_s * 2 ** min(max(attempts - 1, 0), 64), MAX_DELAY_S)
    retry_at = now + timedelta(seconds=delay)
    if retry_at >= deadline:
        # One last try base_s before the URL dies beats none; after it, none is left.
        last = deadline - timedelta(seconds=base_s)
        if last <= now:
            return Decision(None, Reason.EXPIRED)
        retry_at = last
    return Decision(retry_at, reason)
