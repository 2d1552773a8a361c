"""When to poll a task next (pure; table-tested).

Adaptive schedule: the instance learns when its tasks finish, as the empirical distribution
of completion ages (seconds from registration to done) summarised by its percentiles. A
task still running at age a has finished by age t with conditional probability
(F(t) - F(a)) / (1 - F(a)); its next poll is planned at the age where that reaches the
instance's poll_hit_chance q. So polls crowd where completions are likely and thin out
where they are not (before the distribution's bulk, and in its long tail), and a task that
outlives everything seen falls back to the backoff curve. When the planned polls of all
active tasks ask for more than the budget, every interval is stretched by one factor
(`solve_stretch`) until the demand fits: the tasks most likely to be done keep the
shortest intervals, and max_poll_interval_s still bounds every one of them.

Backoff schedule (and the adaptive fallback until an instance has seen MIN_SAMPLES
completions): while nothing changes upstream, the interval grows geometrically from the
instance's min_poll_interval_s to its max_poll_interval_s; a status change starts the curve
again. Fixed schedule: every min_poll_interval_s.

Transient failures back off on their own, longer curve, and a rate-limit answer's
Retry-After is honoured. Jitter (±10 %) keeps tasks registered together from polling in
lockstep. No delay ever carries a task past its deadline: the last poll happens there.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.core.config import PollSchedule, ProviderSettings

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
    now: datetime,
    delay_s: float,
    deadline_at: datetime,
    rng: random.Random,
    ceiling_s: float | None = None,
) -> datetime:
    """`delay_s` from now with jitter, but never past `ceiling_s` (max_poll_interval_s,
    which bounds how long a task goes unpolled) nor past the deadline."""
    seconds = max(0.0, jittered(delay_s, rng))
    if ceiling_s is not None:
        seconds = min(seconds, max(ceiling_s, 0.0))
    at = now + timedelta(seconds=seconds)
    return min(at, deadline_at) if now < deadline_at else at


# Past the 99th percentile the distribution is a handful of samples, and its last segment
# is all the mass there is: conditional quantiles there shrink towards the largest age
# ever seen, and polls bunched up just before it (measured: 16 polls of one task within
# 55 s). A task that has outlived 99 % of completions goes back to the backoff curve.
TRUSTED_UP_TO = 0.99
# Percentiles 0..100 summarise a learned distribution (101 points).
PERCENTILES = tuple(i / 100 for i in range(101))
# Completions an instance (or a size class) must have seen before its distribution is used.
MIN_SAMPLES = 20
# The most recent completions per instance and per size class that the distribution uses:
# recent enough to follow an upstream that speeds up or slows down.
SAMPLE_WINDOW = 1000
# Stretch planned intervals until demand is this share of the budget: headroom for
# retries, file retrieves and the jitter of many tasks falling due at once.
TARGET_UTILISATION = 0.9
# Size classes are half-octaves of size_hint: 1000 and 1400 characters share one, 2000
# does not.
SIZE_CLASS_STEPS_PER_OCTAVE = 2
ALL_SIZES = -1


def size_class(size_hint: int | None) -> int | None:
    """The learning bucket of a task's size hint; None without one."""
    if size_hint is None or size_hint < 1:
        return None
    return math.floor(SIZE_CLASS_STEPS_PER_OCTAVE * math.log2(size_hint))


@dataclass(frozen=True)
class CompletionModel:
    """An empirical distribution of completion ages, as its percentiles 0..100.

    The CDF interpolates linearly between percentiles, so it is continuous and strictly
    increasing across the observed range; ages past the largest observation have no
    prediction (the task has outlived everything seen).
    """

    quantiles: tuple[float, ...]
    samples: int

    def __post_init__(self) -> None:
        if len(self.quantiles) != len(PERCENTILES):
            raise ValueError(f"need {len(PERCENTILES)} percentiles, got {len(self.quantiles)}")
        if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise ValueError("percentiles must not decrease")

    @classmethod
    def of(cls, quantiles: Sequence[float], samples: int) -> CompletionModel:
        return cls(tuple(max(0.0, float(q)) for q in quantiles), samples)

    @classmethod
    def learned(cls, quantiles: Sequence[float], samples: int) -> CompletionModel | None:
        """A stored profile as a model to plan and predict with; None while it has fewer
        than MIN_SAMPLES completions, or if its percentiles do not fit this version."""
        if samples < MIN_SAMPLES or len(quantiles) != len(PERCENTILES):
            return None
        return cls.of(quantiles, samples)

    @property
    def last(self) -> float:
        return self.quantiles[-1]

    def cdf(self, age_s: float) -> float:
        q = self.quantiles
        if age_s < q[0]:
            return 0.0
        if age_s >= q[-1]:
            return 1.0
        # q[i] <= age < q[i + 1], so the segment has a positive width.
        i = bisect.bisect_right(q, age_s) - 1
        return (i + (age_s - q[i]) / (q[i + 1] - q[i])) / 100

    def quantile(self, p: float) -> float:
        x = min(max(p, 0.0), 1.0) * 100
        i = min(int(x), 99)
        return self.quantiles[i] + (x - i) * (self.quantiles[i + 1] - self.quantiles[i])

    def conditional_quantile(self, age_s: float, p: float) -> float | None:
        """The age by which a task still running at `age_s` has finished with chance `p`;
        None once the task has outlived TRUSTED_UP_TO of the completions seen."""
        done = self.cdf(age_s)
        if done >= TRUSTED_UP_TO:
            return None
        return max(age_s, self.quantile(done + p * (1.0 - done)))


@dataclass(frozen=True)
class Plan:
    """The next poll of one task: `interval_s` is what the schedule asks for (it makes up
    the instance's poll demand), `delay_s` what the budget allows (stretched, bounded)."""

    interval_s: float
    delay_s: float


def bounded(settings: ProviderSettings, seconds: float) -> float:
    return min(settings.max_poll_interval_s, max(settings.min_poll_interval_s, seconds))


def plan_next(
    settings: ProviderSettings,
    *,
    age_s: float,
    unchanged_polls: int,
    model: CompletionModel | None,
    stretch: float = 1.0,
) -> Plan:
    """The next poll of a task that is still running at `age_s` after its registration."""
    if settings.schedule is PollSchedule.FIXED:
        return Plan(settings.min_poll_interval_s, settings.min_poll_interval_s)
    delay = unchanged_delay(settings, unchanged_polls)
    if settings.schedule is PollSchedule.ADAPTIVE:
        at = model.conditional_quantile(age_s, settings.poll_hit_chance) if model else None
        wanted = bounded(settings, at - age_s) if at is not None else delay
        # The fallback is stretched too: the forecast counts every adaptive task's interval
        # in the demand it fits to the budget.
        return Plan(wanted, bounded(settings, wanted * max(stretch, 1.0)))
    return Plan(delay, delay)


def plan_first(
    settings: ProviderSettings, model: CompletionModel | None, stretch: float = 1.0
) -> Plan:
    """The first poll: first_poll_delay_s, or later where the learned distribution says
    the first completions start (never later than max_poll_interval_s)."""
    first = settings.first_poll_delay_s
    if settings.schedule is PollSchedule.ADAPTIVE:
        at = model.conditional_quantile(0.0, settings.poll_hit_chance) if model else None
        ceiling = max(first, settings.max_poll_interval_s)
        if at is None:
            wanted = max(first, settings.min_poll_interval_s)
            return Plan(wanted, min(ceiling, max(first, first * max(stretch, 1.0))))
        wanted = min(ceiling, max(first, at))
        return Plan(wanted, min(ceiling, max(first, wanted * max(stretch, 1.0))))
    return Plan(max(first, settings.min_poll_interval_s), first)


def estimated_ready_age(model: CompletionModel | None, age_s: float) -> float | None:
    """The median completion age of a task still running at `age_s`; None without one."""
    if model is None:
        return None
    return model.conditional_quantile(age_s, 0.5)


@dataclass(frozen=True)
class Saturation:
    """An instance's planned poll demand against its budget."""

    demand_per_s: float
    ratio: float
    stretch: float
    expected_detection_delay_s: float | None


# Whatever follow-up requests take, polls keep at least this share of the rate.
MIN_POLL_SHARE = 0.1
# Tasks already overdue when the forecast is made should be polled within this long.
BACKLOG_DRAIN_S = 30.0


def poll_capacity(rate_per_s: float, *, spacing_factor: float, follow_ups_per_s: float) -> float:
    """Polls per second the budget can really give: the effective rate less the budget's
    spacing margin and the follow-up requests (file retrieves) completions cost. Planning
    against the bare rate oversubscribes it, and an oversubscribed budget turns the
    longest-overdue-first queue into one long FIFO wait for every task."""
    if rate_per_s <= 0:
        return 0.0
    usable = rate_per_s / spacing_factor
    return max(usable - max(follow_ups_per_s, 0.0), rate_per_s * MIN_POLL_SHARE)


def _live(intervals: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    """The (interval, task count) pairs that ask for anything."""
    return [(d, n) for d, n in intervals if d > 0 and n > 0]


def demand(
    intervals: Sequence[tuple[float, int]], settings: ProviderSettings, stretch: float
) -> float:
    """Polls per second that (interval, task count) pairs ask for under `stretch`."""
    return sum(n / bounded(settings, d * stretch) for d, n in _live(intervals))


def poll_budget(rate_per_s: float, overdue: int = 0) -> float:
    """Polls per second planned polls may ask for: TARGET_UTILISATION of the capacity, less
    what draining the tasks already overdue takes over BACKLOG_DRAIN_S. The overdue count
    is the feedback that corrects whatever the capacity estimate missed (retries, missed
    slots, a slow upstream): without it an oversubscribed budget's queue only grows."""
    budget = rate_per_s * TARGET_UTILISATION
    return max(budget - max(overdue, 0) / BACKLOG_DRAIN_S, budget * MIN_POLL_SHARE)


def solve_stretch(
    intervals: Sequence[tuple[float, int]],
    settings: ProviderSettings,
    rate_per_s: float,
    overdue: int = 0,
) -> float:
    """The smallest factor >= 1 that brings the demand within the poll budget; when even
    max_poll_interval_s for every task is too much, the factor that puts every task there
    (the backlog then drains longest-overdue first)."""
    budget = poll_budget(rate_per_s, overdue)
    live = _live(intervals)
    if rate_per_s <= 0 or not live or demand(live, settings, 1.0) <= budget:
        return 1.0
    ceiling = max(1.0, settings.max_poll_interval_s / min(d for d, _ in live))
    if demand(live, settings, ceiling) >= budget:
        return ceiling
    low, high = 1.0, ceiling
    for _ in range(60):  # bisection on a log scale; demand falls as the stretch grows
        mid = math.sqrt(low * high)
        if demand(live, settings, mid) > budget:
            low = mid
        else:
            high = mid
        if high / low < 1.001:
            break
    return high


def saturation(
    intervals: Sequence[tuple[float, int]],
    settings: ProviderSettings,
    rate_per_s: float,
    overdue: int = 0,
) -> Saturation:
    """Demand, stretch and the detection delay to expect: half the typical planned interval
    after stretching, or, when the budget cannot poll every task even at
    max_poll_interval_s, half the time a round of the whole backlog takes."""
    wanted = demand(intervals, settings, 1.0)
    if rate_per_s <= 0:
        return Saturation(wanted, 0.0, 1.0, None)
    stretch = (
        solve_stretch(intervals, settings, rate_per_s, overdue)
        if settings.schedule is PollSchedule.ADAPTIVE
        else 1.0
    )
    live = _live(intervals)
    tasks = sum(n for _, n in live)
    if tasks == 0:
        return Saturation(0.0, 0.0, 1.0, None)
    planned = sorted((bounded(settings, d * stretch), n) for d, n in live)
    seen, median = 0, planned[-1][0]
    for interval, n in planned:
        seen += n
        if seen * 2 >= tasks:
            median = interval
            break
    round_trip = tasks / rate_per_s
    delay = 0.5 * max(
        median, round_trip if demand(intervals, settings, stretch) > rate_per_s else 0.0
    )
    return Saturation(wanted, wanted / rate_per_s, stretch, delay)
