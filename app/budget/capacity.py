"""What a rate budget can carry (pure): how far apart its slots are, how late a send may
be, and how many polls per second are left once follow-up requests are paid for."""

from __future__ import annotations

from app.core.config import PollSettings, ProviderSettings

# Why no window of the limit ever sees more than the limit (docs/architecture.md, "Why the
# rate budget cannot be exceeded", has the whole argument). The limit counts requests in a
# sliding window of `limit_window_s(rate)`; slots are SPACING_FACTOR / rate apart on the
# database clock. If every request reaches the upstream between its slot and
# `SPACING_FACTOR - 1` windows after it, the requests of any window come from slots spread
# over less than SPACING_FACTOR windows, and that holds at most the limit. Of that margin,
# ARRIVAL_JITTER_S is kept for what happens after the last check (the write, the network,
# the upstream stamping the request) and the rest is the send slack: how late after its
# slot a request may still leave. A replica may leave later than that by what its run
# booked in the row, and inside its run of slots (`run_late_until`), as long as its own
# sends keep `own_spread_s` apart (`window_count` + 1 of them). The price: at most
# 1/1.025 = 97.6 % of the rate is used.
SPACING_FACTOR = 1.025
ARRIVAL_JITTER_S = 0.017

# A request is handed its slot this long before it starts, to get through the HTTP client
# (and a connection setup) to its send check, where it waits for the slot itself: a busy
# event loop then has this long to be late before the slot is missed.
SEND_LEAD_S = 0.020

# How fast the database's clock may run against this process's monotonic clock, in seconds
# per second, whatever NTP does to either: a clock placement learnt earlier loosens by this
# much per second, and a slot further ahead by this much per second of wait.
CLOCK_DRIFT = 1e-4

# An AIMD cut never takes the rate below this share of the configured one.
MIN_RATE_SHARE = 0.05

# Whatever follow-up requests take, polls keep at least this share of the rate.
MIN_POLL_SHARE = 0.1


def limit_window_s(rate_per_s: float) -> float:
    """The window a per-second rate is counted over: one second, or one request's worth of
    time under 1/s (0.2/s admits one request per 5 s)."""
    return max(1.0, 1.0 / rate_per_s)


def send_slack_s(rate_per_s: float) -> float:
    """How late after its slot a request may still leave: the window's spacing margin less
    what the arrival may add. It scales with the slot once a slot is longer than a second."""
    return (SPACING_FACTOR - 1.0) * limit_window_s(rate_per_s) - ARRIVAL_JITTER_S


def window_count(rate_per_s: float) -> int:
    """How many requests one window of the limit admits (the rate is a whole number of
    requests per window: 10/s admits 10 a second, 0.2/s one per 5 s)."""
    return max(1, int(rate_per_s * limit_window_s(rate_per_s) + 1e-9))


def own_spread_s(rate_per_s: float) -> float:
    """How far apart, on its own clock, any `window_count + 1` consecutive sends of one
    replica must be: as far as that many slots are, and the drift of the clock measuring
    it. A replica that fell behind then stays behind rather than catching up in a burst:
    a burst would leave only the arrival jitter's margin between its first and last
    request, where sends on their slots leave the slack besides."""
    return SPACING_FACTOR * limit_window_s(rate_per_s) * (1.0 + CLOCK_DRIFT)


def run_late_until(last_slot: float, rate_per_s: float) -> float:
    """Until when (plus the slack) any slot of a replica's unbroken run of slots may still
    leave, given the run's last slot: `window_count - 1` of the closest possible slots
    before it. Another replica's next slot is a window's worth of slots after this moment,
    so a request sent this late still cannot share a window with it."""
    return last_slot - (window_count(rate_per_s) - 1) * SPACING_FACTOR / rate_per_s


def poll_capacity(rate_per_s: float, *, spacing_factor: float, follow_ups_per_s: float) -> float:
    """Polls per second the budget can really give: the effective rate less the budget's
    spacing margin and the follow-up requests (file retrieves) completions cost. Planning
    against the bare rate oversubscribes it, and an oversubscribed budget turns the
    longest-overdue-first queue into one long FIFO wait for every task."""
    if rate_per_s <= 0:
        return 0.0
    usable = rate_per_s / spacing_factor
    return max(usable - max(follow_ups_per_s, 0.0), rate_per_s * MIN_POLL_SHARE)


def booked_at_most_s(settings: PollSettings) -> float:
    """How far ahead one loop books the budget at most: its longest lead and a batch."""
    return settings.claim_horizon_s + settings.claim_batch_s


def poll_lease_s(poll_settings: PollSettings, settings: ProviderSettings) -> float:
    """How long a claim of the instance's tasks lasts: at least engine.lease_s, and twice
    the longest a loop books the budget ahead plus the request's timeout and a second. No
    slot later than that after its claim is ever sent (`Pacer.take`)."""
    booked = booked_at_most_s(poll_settings)
    return max(poll_settings.lease_s, 2 * booked + settings.request_timeout_s + 1)
