"""What a rate budget can carry (pure): how far apart its slots are, how late a send may
be, and how many polls per second are left once follow-up requests are paid for."""

from __future__ import annotations

# Slots are spaced this much wider than 1/rate, and a request more than SEND_SLACK_S late
# for its slot is not sent. Together they keep every 1-second window at or under the rate:
# sends leave in [slot, slot + slack), so a window can only see slots from an interval of
# 1 + slack seconds, which holds at most rate slots when they are SPACING_FACTOR/rate apart
# and 1 + slack < SPACING_FACTOR. The remaining 45 ms absorb what happens between the
# check (made right before the bytes are written, after any connection setup) and the
# upstream stamping the request: event-loop lag on either side, network jitter. 35 ms
# (1.04) still let an 11th request into a window on a loaded 2-core machine. The price:
# at most 1/1.05 = 95.2 % of the configured rate is used.
SPACING_FACTOR = 1.05
SEND_SLACK_S = 0.005

# An AIMD cut never takes the rate below this share of the configured one.
MIN_RATE_SHARE = 0.05

# Whatever follow-up requests take, polls keep at least this share of the rate.
MIN_POLL_SHARE = 0.1


def poll_capacity(rate_per_s: float, *, spacing_factor: float, follow_ups_per_s: float) -> float:
    """Polls per second the budget can really give: the effective rate less the budget's
    spacing margin and the follow-up requests (file retrieves) completions cost. Planning
    against the bare rate oversubscribes it, and an oversubscribed budget turns the
    longest-overdue-first queue into one long FIFO wait for every task."""
    if rate_per_s <= 0:
        return 0.0
    usable = rate_per_s / spacing_factor
    return max(usable - max(follow_ups_per_s, 0.0), rate_per_s * MIN_POLL_SHARE)
