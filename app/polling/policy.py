"""When to poll a task next (pure; table-tested).

Adaptive schedule: the instance learns when its tasks finish, as the empirical distribution
of completion ages (seconds from registration to done) summarised by its percentiles. A
task still running at age a has finished by age t with conditional probability
(F(t) - F(a)) / (1 - F(a)). Its next poll is planned at the later of two ages:

* where that chance reaches the hit chance q (poll_hit_chance): polls crowd where
  completions are likely and thin out where they are not;
* where the expected lateness reaches poll_lateness_s: had the task finished meanwhile, it
  would on average have waited that long for the poll, E[(t - T)+ | T > a]. Where
  completions are dense (a sharp distribution, a size class) this keeps the hit chance
  from spending a poll every min_poll_interval_s for fractions of a second of delay.

A task that outlives what the distribution trusts falls back to the backoff curve.

Under a binding budget the hit chance rises (`solve_hit_chance`): fewer, later, likelier
polls per task. The instance's demand is priced per task, not per active task: the
expected polls of the plan a task gets from registration (`schedule_cost`) times the
rate tasks finish, per size class. That is the long-run poll rate of the plan; counting
the intervals of the tasks in flight instead feeds back on itself, since a later poll
keeps a task in flight longer.

Backoff schedule (and the adaptive fallback until an instance has seen MIN_SAMPLES
completions): while nothing changes upstream, the interval grows geometrically from the
instance's min_poll_interval_s to its max_poll_interval_s; a status change starts the curve
again. Fixed schedule: every min_poll_interval_s.

Transient failures back off on their own, longer curve, and a rate-limit answer's
Retry-After is honoured. Jitter (±10 %) keeps tasks registered together from polling in
lockstep. No gap between two polls of a task is ever under min_poll_interval_s, after
jitter; within that, no delay carries a task past its deadline: the last poll happens there.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.core.config import EngineSettings, PollSchedule, ProviderSettings

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


def poll_delay(
    delay_s: float,
    rng: random.Random,
    *,
    floor_s: float,
    ceiling_s: float | None = None,
    deadline_in_s: float | None = None,
) -> float:
    """Seconds to the next poll: `delay_s` with jitter, but never past `ceiling_s`
    (max_poll_interval_s, which bounds how long a task goes unpolled) nor past a deadline
    `deadline_in_s` away, and never sooner than `floor_s` (min_poll_interval_s).

    The floor is applied last, after jitter, the ceiling and the deadline: it is the
    spacing the provider asks for (Jimmy: one query every 5-10 s), and a poll squeezed in
    before it would break that for every schedule, error backoff and Retry-After alike.
    So when the deadline is closer than the floor, the last poll comes one floor after
    this one: at most `floor_s` after the deadline."""
    seconds = max(0.0, jittered(delay_s, rng))
    if ceiling_s is not None:
        seconds = min(seconds, max(ceiling_s, 0.0))
    if deadline_in_s is not None and deadline_in_s > 0:
        seconds = min(seconds, deadline_in_s)
    return max(seconds, floor_s, 0.0)


def next_poll_at(
    now: datetime,
    delay_s: float,
    deadline_at: datetime,
    rng: random.Random,
    *,
    floor_s: float,
    ceiling_s: float | None = None,
) -> datetime:
    """`poll_delay` from `now`, as an instant."""
    seconds = poll_delay(
        delay_s,
        rng,
        floor_s=floor_s,
        ceiling_s=ceiling_s,
        deadline_in_s=(deadline_at - now).total_seconds(),
    )
    return now + timedelta(seconds=seconds)


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
# Raise the hit chance until demand is this share of the budget: headroom for
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
    # The integral of the CDF from 0 up to each percentile: expected lateness in O(log n).
    _area: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.quantiles) != len(PERCENTILES):
            raise ValueError(f"need {len(PERCENTILES)} percentiles, got {len(self.quantiles)}")
        if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise ValueError("percentiles must not decrease")
        area = [0.0]
        for i in range(100):
            width = self.quantiles[i + 1] - self.quantiles[i]
            area.append(area[-1] + width * (i + 0.5) / 100)
        object.__setattr__(self, "_area", tuple(area))

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

    def survival_integral(self, age_s: float) -> float:
        """∫ (1 - F(t)) dt from `age_s` on: the expected time a task still has to run,
        weighted by the chance it is still running (the mean duration from age 0)."""
        if age_s >= self.last:
            return 0.0
        return (self.last - age_s) - (self.integral(self.last) - self.integral(age_s))

    def _segment(self, age_s: float) -> int:
        """i with q[i] <= age < q[i + 1], a segment of positive width (q[0] <= age < q[-1])."""
        return bisect.bisect_right(self.quantiles, age_s) - 1

    def cdf(self, age_s: float) -> float:
        q = self.quantiles
        if age_s < q[0]:
            return 0.0
        if age_s >= q[-1]:
            return 1.0
        i = self._segment(age_s)
        return (i + (age_s - q[i]) / (q[i + 1] - q[i])) / 100

    def integral(self, age_s: float) -> float:
        """∫ F(t) dt from 0 to `age_s`: how long, in total, a completion had been waiting
        by then, on average over all tasks."""
        q = self.quantiles
        if age_s <= q[0]:
            return 0.0
        if age_s >= q[-1]:
            return self._area[-1] + (age_s - q[-1])
        i = self._segment(age_s)
        return self._area[i] + (age_s - q[i]) * (i / 100 + self.cdf(age_s)) / 2

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

    def lateness(self, age_s: float, at_s: float) -> float:
        """E[(at - T)+ | T > age]: how long a task still running at `age_s` will on average
        have been done, by `at_s`, if it finishes in between."""
        done = self.cdf(age_s)
        if at_s <= age_s:
            return 0.0
        if done >= 1.0:  # outlived every observation: as if it finished right away
            return at_s - age_s
        gained = self.integral(at_s) - self.integral(age_s) - done * (at_s - age_s)
        return gained / (1.0 - done)

    def lateness_age(self, age_s: float, lateness_s: float) -> float | None:
        """The age at which `lateness` from `age_s` reaches `lateness_s`; None once the
        task has outlived TRUSTED_UP_TO of the completions seen."""
        done = self.cdf(age_s)
        if done >= TRUSTED_UP_TO:
            return None
        if lateness_s <= 0:
            return age_s
        q = self.quantiles
        need = lateness_s * (1.0 - done)

        def gained(at_s: float) -> float:
            return self.integral(at_s) - self.integral(age_s) - done * (at_s - age_s)

        by_last = gained(q[-1])
        if by_last < need:  # past every observation F = 1
            return q[-1] + (need - by_last) / (1.0 - done)
        # The first percentile point by which enough is gained; gained() never decreases.
        lo, hi = self._segment(age_s) if age_s >= q[0] else 0, 100
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if q[mid] > age_s and gained(q[mid]) >= need:
                hi = mid
            else:
                lo = mid
        start = max(age_s, q[lo])
        rest = need - gained(start)
        width = q[hi] - q[lo]
        # Over [q[lo], q[hi]] the CDF is a line: gained grows by b z + k z^2 / 2.
        b = self.cdf(start) - done
        k = 0.01 / width
        # The root of k z^2 / 2 + b z - rest, in the form that keeps its precision when b
        # dwarfs the rest.
        z = 2 * rest / (b + math.sqrt(b * b + 2 * k * rest))
        return min(q[hi], start + z)


def effective_hit_chance(settings: ProviderSettings, hit_chance: float | None) -> float:
    """The instance's poll_hit_chance, or the higher one the budget calls for."""
    base = settings.poll_hit_chance
    return base if hit_chance is None else max(base, min(hit_chance, MAX_HIT_CHANCE))


def next_poll_age(
    model: CompletionModel, age_s: float, hit_chance: float, lateness_s: float
) -> float | None:
    """The later of where the hit chance and where the expected lateness is reached; None
    past what the model trusts."""
    likely = model.conditional_quantile(age_s, hit_chance)
    if likely is None:
        return None
    late = model.lateness_age(age_s, lateness_s)
    return likely if late is None else max(likely, late)


def bounded(settings: ProviderSettings, seconds: float) -> float:
    return min(settings.max_poll_interval_s, max(settings.min_poll_interval_s, seconds))


def plan_next(
    settings: ProviderSettings,
    *,
    age_s: float,
    unchanged_polls: int,
    model: CompletionModel | None,
    hit_chance: float | None = None,
) -> float:
    """Seconds until the next poll of a task that is still running at `age_s` after its
    registration (before jitter). `hit_chance` is what the budget calls for."""
    if settings.schedule is PollSchedule.FIXED:
        return settings.min_poll_interval_s
    if settings.schedule is PollSchedule.ADAPTIVE and model is not None:
        at = next_poll_age(
            model, age_s, effective_hit_chance(settings, hit_chance), settings.poll_lateness_s
        )
        if at is not None:
            return bounded(settings, at - age_s)
    return unchanged_delay(settings, unchanged_polls)


def plan_first(
    settings: ProviderSettings, model: CompletionModel | None, hit_chance: float | None = None
) -> float:
    """Seconds until the first poll: first_poll_delay_s, or later where the learned
    distribution says so (never later than max_poll_interval_s)."""
    first = settings.first_poll_delay_s
    if settings.schedule is not PollSchedule.ADAPTIVE or model is None:
        return first
    at = next_poll_age(
        model, 0.0, effective_hit_chance(settings, hit_chance), settings.poll_lateness_s
    )
    if at is None:
        return first
    return min(max(first, settings.max_poll_interval_s), max(first, at))


def estimated_ready_age(model: CompletionModel | None, age_s: float) -> float | None:
    """The median completion age of a task still running at `age_s`; None without one."""
    if model is None:
        return None
    return model.conditional_quantile(age_s, 0.5)


# --- the budget -------------------------------------------------------------------------

# The highest hit chance the budget may call for. Past it a plan's cost curve is flat (a
# typical distribution: 2.1 polls per task at 0.5, 1.6 at 0.7, 1.4 at 0.95) while its delay
# grows fast (11, 22, 37 s), so small swings in the completion rate swung the hit chance
# from 0.45 to 0.95 and back; the queue, longest overdue first, takes the excess better.
MAX_HIT_CHANCE = 0.6
# The hit chance the budget calls for is found to within this.
HIT_CHANCE_RESOLUTION = 0.005
# Stop walking a plan once this share of its tasks is left, or after this many polls: a
# forecast walks each size class's plan a dozen times, inline on the leader's event loop.
NEGLIGIBLE_SURVIVAL = 1e-3
MAX_WALKED_POLLS = 200
# Whatever follow-up requests take, polls keep at least this share of the rate.
MIN_POLL_SHARE = 0.1
# Tasks already overdue when the forecast is made should be polled within this long (the
# engine's backlog_drain_s). The shorter it is, the harder the forecast reacts to a
# momentary queue, and a plan's polls follow its hit chance by a task's lifetime: 30 s made
# the hit chance swing between its floor and its ceiling in bench/schedule_model.py.
BACKLOG_DRAIN_S: float = EngineSettings.model_fields["backlog_drain_s"].default


@dataclass(frozen=True)
class ScheduleCost:
    """What the plan a task gets from registration costs, in expectation over the model:
    status polls, and the detection delay (completion to the poll that sees it)."""

    polls: float
    delay_s: float


def schedule_cost(
    settings: ProviderSettings, model: CompletionModel, hit_chance: float | None = None
) -> ScheduleCost:
    """Walk the plan poll by poll: a poll is made if the task was still running at the
    previous one, and a task finishing between two polls waits for the second. Past
    MAX_WALKED_POLLS the rest is priced in closed form at max_poll_interval_s (where a
    plan that long has arrived)."""
    polls = delay = 0.0
    previous, at = 0.0, plan_first(settings, model, hit_chance)
    for made in range(1, MAX_WALKED_POLLS + 1):
        if made == 1:
            # Every task gets its first poll, whatever the model says of age 0, and
            # every completion before it waits for it.
            polls, delay = 1.0, model.integral(at)
        else:
            running = 1.0 - model.cdf(previous)
            if running < NEGLIGIBLE_SURVIVAL:
                return ScheduleCost(polls, delay)
            polls += running
            delay += running * model.lateness(previous, at)
        previous, at = (
            at,
            at
            # The first poll usually finds the task started, which restarts the curve.
            + plan_next(
                settings, age_s=at, unchanged_polls=made - 1, model=model, hit_chance=hit_chance
            ),
        )
    tail = 1.0 - model.cdf(previous)
    interval = settings.max_poll_interval_s
    return ScheduleCost(
        polls + model.survival_integral(previous) / interval, delay + tail * interval / 2
    )


@dataclass(frozen=True)
class Workload:
    """Tasks of one kind finishing at `rate_per_s`, planned with `model`."""

    rate_per_s: float
    model: CompletionModel


def priced_workloads(
    model_for_class: Callable[[int | None], CompletionModel | None],
    completions_per_s: dict[int | None, float],
    *,
    active: int,
) -> list[Workload]:
    """Each size class's completion rate with the model its tasks are planned with (the
    instance's own where the class has not learned one yet); none without a model."""
    found = []
    for size_class, rate in completions_per_s.items():
        model = model_for_class(size_class)
        if model is not None and rate > 0:
            found.append(Workload(rate, model))
    instance = model_for_class(None)
    if not found and active > 0 and instance is not None:
        # Nothing finished within the window (a burst after a quiet spell, tasks longer
        # than the window, a queue far behind), yet tasks are in flight: Little's law
        # gives the rate they will finish at, so the budget stays priced.
        mean_s = instance.survival_integral(0.0)
        if mean_s > 0:
            found.append(Workload(active / mean_s, instance))
    return found


class Pricing:
    """`schedule_cost` for one instance's settings, each (model, hit chance) walked once: a
    forecast prices the same plans again and again while it searches for the hit chance."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._costs: dict[tuple[CompletionModel, float | None], ScheduleCost] = {}

    def cost(self, model: CompletionModel, hit_chance: float | None = None) -> ScheduleCost:
        # Keyed by the hit chance plans really use: None and the instance's own are one plan.
        key = (model, effective_hit_chance(self.settings, hit_chance))
        if (known := self._costs.get(key)) is None:
            known = self._costs[key] = schedule_cost(self.settings, model, hit_chance)
        return known

    def demand(self, workloads: Sequence[Workload], hit_chance: float | None = None) -> float:
        """Status polls per second the plans ask for in the long run: each kind's rate
        times the polls one task's plan costs."""
        return sum(
            w.rate_per_s * self.cost(w.model, hit_chance).polls
            for w in workloads
            if w.rate_per_s > 0
        )


def demand(
    workloads: Sequence[Workload], settings: ProviderSettings, hit_chance: float | None = None
) -> float:
    return Pricing(settings).demand(workloads, hit_chance)


def poll_capacity(rate_per_s: float, *, spacing_factor: float, follow_ups_per_s: float) -> float:
    """Polls per second the budget can really give: the effective rate less the budget's
    spacing margin and the follow-up requests (file retrieves) completions cost. Planning
    against the bare rate oversubscribes it, and an oversubscribed budget turns the
    longest-overdue-first queue into one long FIFO wait for every task."""
    if rate_per_s <= 0:
        return 0.0
    usable = rate_per_s / spacing_factor
    return max(usable - max(follow_ups_per_s, 0.0), rate_per_s * MIN_POLL_SHARE)


def poll_budget(rate_per_s: float, overdue: int = 0, drain_s: float = BACKLOG_DRAIN_S) -> float:
    """Polls per second planned polls may ask for: TARGET_UTILISATION of the capacity, less
    what draining the tasks already overdue takes over `drain_s`. The overdue count
    is the feedback that corrects whatever the forecast missed (retries, missed slots, a
    slow upstream, a burst of registrations): without it an oversubscribed budget's queue
    only grows."""
    budget = rate_per_s * TARGET_UTILISATION
    return max(budget - max(overdue, 0) / drain_s, budget * MIN_POLL_SHARE)


def solve_hit_chance(
    workloads: Sequence[Workload],
    settings: ProviderSettings,
    capacity_per_s: float,
    overdue: int = 0,
    pricing: Pricing | None = None,
    drain_s: float = BACKLOG_DRAIN_S,
) -> float:
    """The lowest hit chance >= poll_hit_chance whose plans fit the poll budget; when even
    MAX_HIT_CHANCE does not, that (the backlog then drains longest-overdue first)."""
    base = settings.poll_hit_chance
    if (
        settings.schedule is not PollSchedule.ADAPTIVE
        or capacity_per_s <= 0
        or base >= MAX_HIT_CHANCE
    ):
        return base
    pricing = pricing or Pricing(settings)
    budget = poll_budget(capacity_per_s, overdue, drain_s)
    if pricing.demand(workloads, base) <= budget:
        return base
    low, high = base, MAX_HIT_CHANCE
    if pricing.demand(workloads, high) > budget:
        return high
    # Bisection: a higher hit chance asks for fewer polls (all but imperceptibly: a later
    # fallback can restart its curve lower).
    while high - low > HIT_CHANCE_RESOLUTION:
        mid = (low + high) / 2
        if pricing.demand(workloads, mid) > budget:
            low = mid
        else:
            high = mid
    return high


@dataclass(frozen=True)
class Saturation:
    """An instance's poll demand against its budget, and the plan that fits it."""

    demand_per_s: float  # at the instance's own poll_hit_chance
    ratio: float
    hit_chance: float
    expected_detection_delay_s: float | None


def saturation(
    workloads: Sequence[Workload],
    settings: ProviderSettings,
    capacity_per_s: float,
    overdue: int = 0,
    planned: Sequence[tuple[float, int]] = (),
    drain_s: float = BACKLOG_DRAIN_S,
) -> Saturation:
    """Demand at the instance's hit chance, the hit chance that fits the budget, and the
    detection delay its plans give on average (by completion rate), plus, when even
    MAX_HIT_CHANCE asks for more than the capacity, the wait of a backlog growing at the
    excess rate for `drain_s`.

    Until the instance has learned a model, demand is what the tasks in flight ask for now
    (`planned`: (planned interval, task count) pairs), and the delay half their median
    interval, or half a round of all of them when they ask for more than the capacity."""
    live = [w for w in workloads if w.rate_per_s > 0]
    if not live:
        return _planned_saturation(planned, settings, capacity_per_s)
    pricing = Pricing(settings)
    wanted = pricing.demand(live)
    if capacity_per_s <= 0:
        return Saturation(wanted, 0.0, settings.poll_hit_chance, None)
    hit_chance = solve_hit_chance(live, settings, capacity_per_s, overdue, pricing, drain_s)
    total = sum(w.rate_per_s for w in live)
    delay = sum(w.rate_per_s * pricing.cost(w.model, hit_chance).delay_s for w in live) / total
    fitted = pricing.demand(live, hit_chance)
    if fitted > capacity_per_s:
        delay += drain_s * (fitted / capacity_per_s - 1.0)
    return Saturation(wanted, wanted / capacity_per_s, hit_chance, delay)


def _planned_saturation(
    planned: Sequence[tuple[float, int]], settings: ProviderSettings, capacity_per_s: float
) -> Saturation:
    live = sorted((d, n) for d, n in planned if d > 0 and n > 0)
    tasks = sum(n for _, n in live)
    if not tasks:
        return Saturation(0.0, 0.0, settings.poll_hit_chance, None)
    wanted = sum(n / d for d, n in live)
    if capacity_per_s <= 0:
        return Saturation(wanted, 0.0, settings.poll_hit_chance, None)
    seen = 0
    median = live[-1][0]
    for interval, n in live:
        seen += n
        if seen * 2 >= tasks:
            median = interval
            break
    # Oversubscribed, the queue serves the longest overdue first: a round of every task.
    delay = max(median, tasks / capacity_per_s if wanted > capacity_per_s else 0.0) / 2
    return Saturation(wanted, wanted / capacity_per_s, settings.poll_hit_chance, delay)
