"""An offline model of pollhook's poll scheduling for one MiniMax instance: what
`python -m bench.adaptive_schedule` measures end to end in ~20 minutes, in seconds, so that
policy changes can be compared over many seeds; and a lower bound on what any schedule of
a simple family can reach.

Run from the repository root:

    python -m bench.schedule_model [--inflight 20,100,150] [--seeds 1,2,3]
        [--variants fixed,backoff,adaptive,hints] [--hit-chance Q] [--lateness S]
        [--horizon 900] [--bound] [--json PATH]

**What is modelled** (a discrete-event simulation in real seconds; no processes, no
database). The workload and the measured tasks are the end-to-end benchmark's own
(`bench.adaptive_schedule.workload` and `measured`, horizon 900 s, arrivals going on until
every measured task is detected or DRAIN_MAX_S has passed); seed s draws the workload that
benchmark draws with `--seed s`. The provider settings are that benchmark's
(`minimax_settings`), every plan comes from `app/schedule/plans.py` and every forecast from
`app/schedule/pricing.py`, as the engine calls them. Around them the engine is reproduced:

* the budget: one request per slot, slots SPACING_FACTOR / rate apart; the due task with
  the earliest `next_poll_at` goes first (longest overdue first); a poll that finds the
  task done takes one more slot for the file retrieve (`requests_per_success`), and the
  task completes (and is learned from) then;
* registration plans the first poll with `plan_first`, without jitter; each later poll with
  `plan_next`, then `plans.poll_delay` as the engine does: jittered, capped at
  `max_poll_interval_s`, floored at `min_poll_interval_s`.
  The first poll turns a task from pending to processing, which resets `unchanged_polls`;
* every MODEL_REFRESH_S the refresh of `ForecastRefresher.refresh`: what its SQL computes
  is done here in Python (profiles of 101 percentiles, `percentile_cont`, over the last
  SAMPLE_WINDOW samples of the instance and of each size class; the completion rates per
  size class of `CompletionRepository.recent_completions_per_s`; the overdue count; the
  planned intervals grouped as `ForecastRepository.active_tasks` groups them), the
  profiles are loaded into a `Forecasts` copy, and `pricing.forecast_instance` sets the hit
  chance every plan uses until the next refresh.

A policy change is tried by changing app/schedule/ in a scratch tree and running this there.

**What is not modelled**: network round trips and the upstream's answer time, the
database's transaction time, more than one worker, claim batches and the claim horizon
(a task that falls due waits only for the tasks due before it, never for a batch claimed
ahead of it), leases, missed slots and retries, rate-limit answers and the AIMD rate cut,
deadlines, and the API process's forecast copy lagging the worker's by up to one refresh.
Requests cost no time, so the peak in any 1-second window cannot exceed the budget: it is
reported as a check of the model.

**Against the end-to-end benchmark**, checked when this was written: docs/benchmarks.md's
table, rerun here on its workload (seed 5) with the committed policy it measured (HEAD
5f3a46d, whose review fixes since matter only under saturation), through a scratch copy of
that policy not kept here. At N=20 polls per task came within 2 % for every
variant (fixed 7.66 against 7.51, backoff 7.73 / 7.65, adaptive 5.55 / 5.47, hints 5.43 /
5.33), and so did their ratios to fixed (1.01x, 0.73x, 0.71x against 1.02x, 0.73x, 0.71x).
The p50 ratios agreed less: 2.05x, 1.00x, 0.51x against 1.62x, 0.92x, 0.43x. The model's
fixed p50 is 2.3 s against 2.7 s: it has no round trips, which count 10x in the compressed
benchmark, and the jitter alone moves a median over 270 tasks by +-0.15 s. Saturated,
fixed's polls per task still agree within 2 % (2.46 / 2.42 at N=100, 1.52 / 1.50 at N=150)
but every delay is shorter here (fixed p50 8.3 s against 11.5 s at N=100): the claim
batches and round trips left out queue every schedule. Under saturation, compare policies
with each other in the model; do not read its figures as the benchmark's.

A default run (36 runs) takes ~12 s on a 2-core machine, nearly all of it in the forecasts
of the adaptive variants with size hints; `--bound` adds ~12 s.

**The bound** (`--bound`): over the durations of measured tasks drawn from the same
generator, the best schedule that is the same for every task (first poll at t0, then every
I until t1, then intervals growing xg, or at once, to 60 s), with no queue: every poll at
its planned time, the file retrieve on the next slot. Reported: the fewest polls per task
with a p50 no worse than fixed's at N=20, and the lowest p50 with no more polls per task
than fixed's at N=100 and N=150. Then the same with each task's size known (the schedule
in units of its expected duration, 20 s x size / 1000, which leaves the workload's noise,
sigma 0.15; delays are still reported in seconds). It ignores queueing, so under a binding
budget it is a bound in the no-queue sense only; intervals are not held to the 1 s minimum,
which only loosens it; and it is the best of a grid over one family, not of every schedule.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.budget.capacity import SPACING_FACTOR
from app.core.config import (
    KIND_DEFAULTS,
    PollSchedule,
    PollSettings,
    ProviderKind,
    ProviderSettings,
)
from app.providers.registry import adapter_for
from app.schedule import plans, pricing
from app.schedule.forecasts import Forecasts
from app.schedule.model import ALL_SIZES, PERCENTILES, SAMPLE_WINDOW, CompletionModel, size_class
from app.schedule.repository import ProfileRow
from bench._support import describe_machine, percentile, write_report
from bench.adaptive_schedule import (
    BUDGET_PER_S,
    DRAIN_MAX_S,
    FIXED_INTERVAL_S,
    MAX_INTERVAL_S,
    MEAN_DURATION_S,
    MODEL_REFRESH_S,
    SATURATED_P50_MAX,
    SECONDS_PER_1000,
    TAIL_GRACE_S,
    UNSATURATED_POLLS_MAX,
    VARIANTS,
    WARMUP_SHARE,
    Variant,
    measured,
    minimax_settings,
    parse_variants,
    saturated,
    workload,
)

KIND = ProviderKind.MINIMAX_T2A
PROVIDER = "minimax"
HORIZON_S = 900.0
# bench.adaptive_schedule gives MODEL_REFRESH_S in compressed seconds, at its default 10x.
BENCH_FACTOR = 10.0
REFRESH_S = MODEL_REFRESH_S * BENCH_FACTOR
# The engine's defaults, which the end-to-end benchmark passes compressed.
FORECAST_WINDOW_S: float = PollSettings.model_fields["forecast_window_s"].default
BACKLOG_DRAIN_S: float = PollSettings.model_fields["backlog_drain_s"].default
SLOT_S = SPACING_FACTOR / BUDGET_PER_S
REQUESTS_PER_SUCCESS = adapter_for(KIND).requests_per_success
# The sandbox's limit is per sliding 1-second window.
WINDOW_S = 1.0
DEFAULT_INFLIGHT = (20, 100, 150)
DEFAULT_SEEDS = (1, 2, 3)
# The bound's targets are fixed's figures in these scenarios.
BOUND_UNSATURATED = 20
BOUND_SATURATED = (100, 150)
BOUND_TASKS = 20_000


def provider_settings(
    variant: Variant, *, hit_chance: float | None = None, lateness_s: float | None = None
) -> ProviderSettings:
    """The MiniMax instance as bench.adaptive_schedule configures it for `variant`."""
    return ProviderSettings(
        **{
            **KIND_DEFAULTS[KIND],
            "kind": KIND,
            **minimax_settings(variant, hit_chance=hit_chance, lateness_s=lateness_s),
        }
    )


# --- what the database would hold ----------------------------------------------------------------


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> float:
    """Postgres percentile_cont: linear interpolation between the neighbouring ranks."""
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class Learning:
    """completion_samples and completion_profiles of the one instance, and this process's
    copy of the profiles (app/schedule/forecasts.py)."""

    def __init__(self) -> None:
        # ALL_SIZES and each size class: the ages their profiles summarise, newest last.
        self.samples: dict[int, deque[float]] = {}
        # What recent_completions_per_s ranks: the instance's newest samples.
        self.observed: deque[tuple[float, int | None]] = deque(maxlen=SAMPLE_WINDOW)
        self.profiles: dict[int, ProfileRow] = {}
        self.changed: set[int] = set()
        self.forecasts = Forecasts(ttl_s=REFRESH_S)

    def add(self, at_s: float, size_class: int | None, age_s: float) -> None:
        keys = [ALL_SIZES] if size_class is None else [ALL_SIZES, size_class]
        for key in keys:
            self.samples.setdefault(key, deque(maxlen=SAMPLE_WINDOW)).append(age_s)
            self.changed.add(key)
        self.observed.append((at_s, size_class))

    def refresh(self, now_s: float) -> None:
        """refresh_profiles, then Forecasts.load."""
        # A profile whose samples did not change comes out the same: not recomputed.
        for key in self.changed:
            ordered = sorted(self.samples[key])
            quantiles = [percentile_cont(ordered, p) for p in PERCENTILES]
            self.profiles[key] = ProfileRow(PROVIDER, key, len(ordered), quantiles)
        self.changed.clear()
        self.forecasts.load(list(self.profiles.values()), {}, now_s)

    def model_for(self, size_class: int | None) -> CompletionModel | None:
        return self.forecasts.model_for_class(PROVIDER, size_class)

    def completions_per_s(self, now_s: float) -> dict[int | None, float]:
        """recent_completions_per_s: per size class over FORECAST_WINDOW_S, or over
        what the kept samples span when all of them are that recent."""
        since = now_s - FORECAST_WINDOW_S
        recent = Counter(c for at, c in self.observed if at > since)
        kept = len(self.observed)
        if kept >= SAMPLE_WINDOW and sum(recent.values()) == kept:
            span = max(now_s - self.observed[0][0], 1e-3)
            return {c: n / span for c, n in recent.items()}
        return {c: n / FORECAST_WINDOW_S for c, n in recent.items()}


def planned_intervals(intervals: Iterable[float]) -> list[tuple[float, int]]:
    """ForecastRepository.active_tasks' planned intervals: grouped to within 5 %, averaged."""
    groups: dict[int, list[float]] = {}
    for interval in intervals:
        if interval > 0:
            scaled = math.log(interval) * 20
            # Postgres round(): halves away from zero.
            key = int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))
            groups.setdefault(key, []).append(interval)
    return [(sum(group) / len(group), len(group)) for group in groups.values()]


def peak_in_window(times: Sequence[float], window_s: float = WINDOW_S) -> int:
    """The most of the ascending `times` within any `window_s` (half-open)."""
    peak = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


# --- one run -------------------------------------------------------------------------------------


@dataclass
class SimTask:
    index: int
    created_s: float
    done_s: float
    size_class: int | None
    next_poll_s: float = math.inf
    interval_s: float = 0.0
    last_poll_s: float | None = None
    polls: int = 0
    unchanged_polls: int = 0
    # Registered as pending; MiniMax reports Processing from creation on.
    processing: bool = False
    seen_s: float | None = None
    detected_s: float | None = None
    longest_gap_s: float = 0.0


@dataclass(frozen=True)
class RunResult:
    variant: str
    inflight: int
    seed: int
    measured: int
    undetected: int
    delay_p50_s: float
    delay_p90_s: float
    delay_p99_s: float
    delay_mean_s: float
    polls_per_task: float
    longest_gap_p99_s: float
    longest_gap_max_s: float
    peak_requests_1s: int
    requests_per_s: float
    # The hit chance the forecast set, median over the refreshes of the measured window.
    hit_chance_p50: float | None
    end_s: float


@dataclass
class Simulation:
    """One variant, one workload: the engine's loop over budget slots, registrations and
    forecast refreshes, each handled in time order."""

    settings: ProviderSettings
    tasks: list[SimTask]
    rng: random.Random
    learning: Learning = field(default_factory=Learning)
    # The hit chance the last forecast set (None: the instance's own), and each one set.
    hit_chance: float | None = None
    hit_chances: list[tuple[float, float]] = field(default_factory=list)
    queue: list[tuple[float, int]] = field(default_factory=list)
    retrieves: deque[SimTask] = field(default_factory=deque)
    active: dict[int, SimTask] = field(default_factory=dict)
    requests: list[float] = field(default_factory=list)

    def run(self, measured_ids: set[int], end_s: float) -> float:
        """Until every measured task is detected, or `end_s`; returns the time reached."""
        waiting = set(measured_ids)
        free_at = 0.0  # the next slot
        refresh_at = 0.0  # the engine forecasts once on start
        arriving = 0
        now = 0.0
        while waiting:
            if self.retrieves:
                request_at = free_at
            elif self.queue:
                request_at = max(free_at, self.queue[0][0])
            else:
                request_at = math.inf
            arrival_at = self.tasks[arriving].created_s if arriving < len(self.tasks) else math.inf
            event_at = min(arrival_at, refresh_at)
            now = min(event_at, request_at)
            if now > end_s:
                return end_s
            if event_at <= request_at:
                if arrival_at <= refresh_at:
                    self.register(self.tasks[arriving])
                    arriving += 1
                else:
                    self.refresh(refresh_at)
                    refresh_at += REFRESH_S
                continue
            self.requests.append(request_at)
            free_at = request_at + SLOT_S
            if self.retrieves:
                task = self.retrieves.popleft()
                self.complete(task, request_at)
                waiting.discard(task.index)
            else:
                self.poll(self.tasks[heapq.heappop(self.queue)[1]], request_at)
        return now

    def register(self, task: SimTask) -> None:
        # app/tasks/service.py: no jitter on the first poll.
        task.interval_s = plans.plan_first(
            self.settings, self.learning.model_for(task.size_class), self.hit_chance
        )
        task.next_poll_s = task.created_s + task.interval_s
        heapq.heappush(self.queue, (task.next_poll_s, task.index))
        self.active[task.index] = task

    def poll(self, task: SimTask, at_s: float) -> None:
        previous = task.created_s if task.last_poll_s is None else task.last_poll_s
        task.longest_gap_s = max(task.longest_gap_s, at_s - previous)
        task.polls += 1
        if at_s >= task.done_s:
            task.seen_s = at_s
            self.retrieves.append(task)
            return
        if task.processing:
            task.unchanged_polls += 1
        else:
            task.processing = True
            task.unchanged_polls = 0
        task.interval_s = plans.plan_next(
            self.settings,
            age_s=at_s - task.created_s,
            unchanged_polls=task.unchanged_polls,
            model=self.learning.model_for(task.size_class),
            hit_chance=self.hit_chance,
        )
        delay = plans.poll_delay(
            task.interval_s,
            self.rng,
            floor_s=self.settings.min_poll_interval_s,
            ceiling_s=self.settings.max_poll_interval_s,
        )
        task.last_poll_s = at_s
        task.next_poll_s = at_s + delay
        heapq.heappush(self.queue, (task.next_poll_s, task.index))

    def complete(self, task: SimTask, at_s: float) -> None:
        """The apply after the file retrieve: done, and learned from at the midpoint since
        the previous poll, as PollingService.apply does."""
        previous = task.created_s if task.last_poll_s is None else task.last_poll_s
        age = max(0.0, previous + (at_s - previous) / 2 - task.created_s)
        self.learning.add(at_s, task.size_class, age)
        task.detected_s = task.last_poll_s = at_s
        del self.active[task.index]

    def refresh(self, now_s: float) -> None:
        """The forecast refresh (app/schedule/refresh.py). Only the adaptive schedule plans
        with what it learns and with the hit chance: for the others it changes no poll, and
        skipping it saves most of their run time."""
        if self.settings.schedule is not PollSchedule.ADAPTIVE:
            return
        self.learning.refresh(now_s)
        # A task awaiting its file retrieve is claimed: its next_poll_at is the lease's end.
        overdue = sum(
            1 for t in self.active.values() if t.seen_s is None and t.next_poll_s <= now_s
        )
        forecast = pricing.forecast_instance(
            self.settings,
            rate_per_s=BUDGET_PER_S,
            completions_per_s=self.learning.completions_per_s(now_s),
            model_for_class=self.learning.model_for,
            planned=planned_intervals(t.interval_s for t in self.active.values()),
            overdue=overdue,
            follow_ups_per_success=REQUESTS_PER_SUCCESS,
            drain_s=BACKLOG_DRAIN_S,
        )
        self.hit_chance = forecast.saturation.hit_chance
        self.hit_chances.append((now_s, self.hit_chance))


def simulate(
    inflight: int,
    variant: Variant,
    seed: int,
    *,
    horizon_s: float = HORIZON_S,
    hit_chance: float | None = None,
    lateness_s: float | None = None,
) -> RunResult:
    """One run of the model, measured as bench.adaptive_schedule measures one."""
    settings = provider_settings(variant, hit_chance=hit_chance, lateness_s=lateness_s)
    # The end-to-end benchmark seeds each scenario's workload with --seed + N.
    workload_seed = seed + inflight
    arrivals = workload(inflight, horizon_s + DRAIN_MAX_S, 1.0, workload_seed)
    chosen = measured(arrivals, horizon_s, 1.0)
    tasks = [
        SimTask(
            index=i,
            created_s=a.at_s,
            done_s=a.at_s + a.duration_s,
            size_class=size_class(a.size) if variant.hints else None,
        )
        for i, a in enumerate(arrivals)
    ]
    sim = Simulation(settings, tasks, random.Random(workload_seed))
    end = sim.run(chosen, horizon_s + DRAIN_MAX_S)
    return _result(sim, variant, inflight, seed, chosen, horizon_s, end)


def _result(
    sim: Simulation,
    variant: Variant,
    inflight: int,
    seed: int,
    chosen: set[int],
    horizon_s: float,
    end_s: float,
) -> RunResult:
    tasks = [sim.tasks[i] for i in sorted(chosen)]
    delays = sorted(t.detected_s - t.done_s for t in tasks if t.detected_s is not None)
    gaps = sorted(t.longest_gap_s for t in tasks)
    chances = [q for at, q in sim.hit_chances if horizon_s * WARMUP_SHARE <= at <= horizon_s]
    return RunResult(
        variant=variant.name,
        inflight=inflight,
        seed=seed,
        measured=len(tasks),
        undetected=len(tasks) - len(delays),
        delay_p50_s=percentile(delays, 50),
        delay_p90_s=percentile(delays, 90),
        delay_p99_s=percentile(delays, 99),
        delay_mean_s=statistics.fmean(delays) if delays else 0.0,
        polls_per_task=statistics.fmean(t.polls for t in tasks) if tasks else 0.0,
        longest_gap_p99_s=percentile(gaps, 99),
        longest_gap_max_s=gaps[-1] if gaps else 0.0,
        peak_requests_1s=peak_in_window(sim.requests),
        requests_per_s=len(sim.requests) / end_s if end_s > 0 else 0.0,
        hit_chance_p50=statistics.median(chances) if chances else None,
        end_s=end_s,
    )


# --- the lower bound -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Polls at `first`, then every `interval` for `dense_steps` more, then intervals growing
    x`growth` (None: at once) up to MAX_INTERVAL_S. In seconds, or with sizes known, in
    units of a task's expected duration."""

    first: float
    interval: float
    dense_steps: int
    growth: float | None

    @property
    def dense_until(self) -> float:
        return self.first + self.dense_steps * self.interval

    def ages(self, unit_s: float, beyond: float) -> list[float]:
        """Poll ages in units for a task whose unit is `unit_s` seconds, up to the first
        at or past `beyond`."""
        ages = [self.first + j * self.interval for j in range(self.dense_steps + 1)]
        cap = MAX_INTERVAL_S / unit_s
        step = self.interval
        while ages[-1] < beyond:
            step = cap if self.growth is None else min(cap, step * self.growth)
            ages.append(ages[-1] + step)
        return ages

    def describe(self, unit: str) -> str:
        dense = (
            f", every {self.interval:g}{unit} to {self.dense_until:g}{unit}"
            if self.dense_steps
            else ""
        )
        if self.growth is None:
            tail = f"every {MAX_INTERVAL_S:g} s"
        else:
            tail = (
                f"intervals from {self.interval * self.growth:g}{unit} growing "
                f"x{self.growth:g} up to {MAX_INTERVAL_S:g} s"
            )
        return f"first poll at {self.first:g}{unit}{dense}, then {tail}"


@dataclass(frozen=True)
class Sample:
    """Tasks' durations (seconds) and units (seconds: 1.0 without sizes, the expected
    duration with them)."""

    durations_s: tuple[float, ...]
    units_s: tuple[float, ...]


def bound_sample(tasks: int, seed: int, *, sizes: bool, horizon_s: float = HORIZON_S) -> Sample:
    """The durations of measured tasks of as many workloads as it takes: long tasks are as
    under-represented as among the model's (and the benchmark's) measured tasks."""
    durations: list[float] = []
    units: list[float] = []
    draw = seed
    while len(durations) < tasks:
        # The measured window, not N, decides which durations are measured: a large N
        # just draws many at once.
        arrivals = workload(1000, horizon_s, 1.0, draw)
        for i in sorted(measured(arrivals, horizon_s, 1.0)):
            durations.append(arrivals[i].duration_s)
            units.append(SECONDS_PER_1000 * arrivals[i].size / 1000 if sizes else 1.0)
        draw += 1
    return Sample(tuple(durations[:tasks]), tuple(units[:tasks]))


def schedule_delays(schedule: Schedule, sample: Sample) -> tuple[list[float], list[int]]:
    """Per task, the detection delay (seconds, the file retrieve included) and the polls it
    took, with no queue: the reference the fast evaluation below must agree with."""
    delays: list[float] = []
    polls: list[int] = []
    for duration, unit in zip(sample.durations_s, sample.units_s, strict=True):
        age = duration / unit
        ages = schedule.ages(unit, age)
        k = bisect.bisect_left(ages, age)
        delays.append((ages[k] - age) * unit + SLOT_S)
        polls.append(k + 1)
    return delays, polls


class Evaluation:
    """Polls per task and the p50 delay of schedules over one sample, fast: tasks whose
    ages fall between the same two polls of the dense phase share their poll, so they are
    counted by bisection and only the tail is walked task by task (with no sizes, every
    task has the same schedule and nothing is walked)."""

    def __init__(self, sample: Sample) -> None:
        order = sorted(
            range(len(sample.durations_s)),
            key=lambda i: sample.durations_s[i] / sample.units_s[i],
        )
        self.ages = [sample.durations_s[i] / sample.units_s[i] for i in order]
        self.units = [sample.units_s[i] for i in order]
        self.uniform = len(set(self.units)) == 1
        self.rank = max(1, math.ceil(len(self.ages) / 2))  # nearest-rank p50, as percentile()

    def _polls_of(self, schedule: Schedule) -> list[float]:
        """The poll ages every task shares: all of them with no sizes, else the dense phase."""
        if self.uniform:
            return schedule.ages(self.units[0], self.ages[-1])
        return schedule.ages(1.0, -math.inf)[: schedule.dense_steps + 1]

    def polls(self, schedule: Schedule) -> float:
        shared = self._polls_of(schedule)
        total = below = 0
        for k, age in enumerate(shared):
            upto = bisect.bisect_right(self.ages, age)
            total += (k + 1) * (upto - below)
            below = upto
        if not self.uniform:
            total += sum(self._tail(schedule, shared)[1])
        return total / len(self.ages)

    def delays(self, schedule: Schedule) -> list[float]:
        """Detection delays in seconds, the file retrieve included, in no particular order."""
        shared = self._polls_of(schedule)
        out: list[float] = []
        below = 0
        for age in shared:
            upto = bisect.bisect_right(self.ages, age)
            out.extend(
                (age - a) * u + SLOT_S
                for a, u in zip(self.ages[below:upto], self.units[below:upto], strict=True)
            )
            below = upto
        if not self.uniform:
            out.extend(self._tail(schedule, shared)[0])
        return out

    def p50(self, schedule: Schedule) -> float:
        return sorted(self.delays(schedule))[self.rank - 1]

    def meets(self, schedule: Schedule, p50_s: float) -> bool:
        """Whether the p50 delay is at most `p50_s` (up to rounding: a quick filter)."""
        if not self.uniform:
            return sum(1 for d in self.delays(schedule) if d <= p50_s) >= self.rank
        slack = (p50_s - SLOT_S) / self.units[0]
        if slack < 0:
            return False
        within, previous = 0, -math.inf
        for age in self._polls_of(schedule):
            # Detected at `age`: the ages in (previous, age]; in time: those from age - slack.
            earliest = age - slack
            first = (
                bisect.bisect_right(self.ages, previous)
                if earliest <= previous
                else bisect.bisect_left(self.ages, earliest)
            )
            within += bisect.bisect_right(self.ages, age) - first
            previous = age
        return within >= self.rank

    def _tail(self, schedule: Schedule, dense: list[float]) -> tuple[list[float], list[int]]:
        """Delays and polls of the tasks past the dense phase, whose interval cap (60 s)
        is a different number of units each."""
        delays: list[float] = []
        polls: list[int] = []
        start = bisect.bisect_right(self.ages, dense[-1])
        for a, u in zip(self.ages[start:], self.units[start:], strict=True):
            cap = MAX_INTERVAL_S / u
            age, step, k = dense[-1], schedule.interval, len(dense)
            while age < a:
                step = cap if schedule.growth is None else min(cap, step * schedule.growth)
                age += step
                k += 1
            delays.append((age - a) * u + SLOT_S)
            polls.append(k)
        return delays, polls


@dataclass(frozen=True)
class Best:
    schedule: Schedule
    polls_per_task: float
    p50_s: float


GROWTHS: tuple[float | None, ...] = (1.5, 2.0, 3.0, None)


def grid(
    firsts: Iterable[float], intervals: Iterable[float], spans: Iterable[float]
) -> list[Schedule]:
    """Every combination, the dense phase as close to `span` as whole intervals get."""
    schedules = {
        Schedule(first, interval, round(span / interval), growth)
        for first in firsts
        for interval in intervals
        for span in spans
        for growth in GROWTHS
    }
    return sorted(schedules, key=lambda s: (s.first, s.interval, s.dense_steps, s.growth or 0))


# Seconds, without sizes: the bulk of the durations lies between 10 and 40 s.
SECONDS_GRID = grid(
    [0.5 * i for i in range(2, 81)],
    [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0],
    [0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0],
)
# Units of a task's expected duration, with sizes: the noise leaves 0.6-1.7 of them. Coarser,
# since each task's tail is walked on its own.
UNITS_GRID = grid(
    [0.6 + 0.05 * i for i in range(15)],
    [0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2],
    [0.0, 0.15, 0.3, 0.6, 0.9],
)


def costed(evaluation: Evaluation, schedules: Iterable[Schedule]) -> list[tuple[float, Schedule]]:
    """(polls per task, schedule), fewest polls first."""
    return sorted(((evaluation.polls(s), s) for s in schedules), key=lambda pair: pair[0])


def fewest_polls(
    evaluation: Evaluation, schedules: Sequence[tuple[float, Schedule]], p50_s: float
) -> Best | None:
    """The schedule with the fewest polls per task whose p50 is at most `p50_s`."""
    for polls, schedule in schedules:
        if evaluation.meets(schedule, p50_s) and (p50 := evaluation.p50(schedule)) <= p50_s:
            return Best(schedule, polls, p50)
    return None


def lowest_p50(
    evaluation: Evaluation, schedules: Sequence[tuple[float, Schedule]], polls_per_task: float
) -> Best | None:
    """The schedule with the lowest p50 among those with at most `polls_per_task`."""
    best: Best | None = None
    # The costliest first: they tend to be the fastest, and a good early best prunes the rest.
    for polls, schedule in reversed(schedules):
        if polls > polls_per_task:
            continue
        if best is not None and not evaluation.meets(schedule, best.p50_s):
            continue
        p50 = evaluation.p50(schedule)
        if best is None or p50 < best.p50_s:
            best = Best(schedule, polls, p50)
    return best


def fixed_reference(sample: Sample) -> Schedule:
    """Fixed polling every 5 s, as a schedule of the family (for tasks in seconds)."""
    longest = max(d / u for d, u in zip(sample.durations_s, sample.units_s, strict=True))
    return Schedule(FIXED_INTERVAL_S, FIXED_INTERVAL_S, math.ceil(longest / FIXED_INTERVAL_S), None)


# --- the command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    inflight: list[int]
    seeds: list[int]
    variants: list[Variant]
    hit_chance: float | None
    lateness_s: float | None
    horizon_s: float
    bound: bool
    json_path: Path | None


@dataclass(frozen=True)
class Summary:
    """One variant in one scenario over the seeds: medians, and ratios to fixed per seed."""

    variant: str
    schedule: str
    inflight: int
    seeds: list[int]
    measured: list[int]
    delay_p50_s: float
    delay_p90_s: float
    delay_p99_s: float
    delay_mean_s: float
    polls_per_task: float
    longest_gap_p99_s: float
    longest_gap_max_s: float
    peak_requests_1s: int
    undetected: int
    hit_chance_p50: float | None
    p50_vs_fixed: list[float]
    polls_vs_fixed: list[float]

    @property
    def p50_ratio(self) -> float:
        return statistics.median(self.p50_vs_fixed)

    @property
    def polls_ratio(self) -> float:
        return statistics.median(self.polls_vs_fixed)


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else math.nan


def summarize(runs: Sequence[RunResult], variants: Sequence[Variant]) -> list[Summary]:
    fixed = {(r.inflight, r.seed): r for r in runs if r.variant == VARIANTS["fixed"].name}
    out: list[Summary] = []
    for inflight in dict.fromkeys(r.inflight for r in runs):
        for variant in variants:
            mine = [r for r in runs if r.inflight == inflight and r.variant == variant.name]
            if not mine:
                continue
            bases = [fixed[inflight, r.seed] for r in mine]
            chances = [r.hit_chance_p50 for r in mine if r.hit_chance_p50 is not None]
            out.append(
                Summary(
                    variant=variant.name,
                    schedule=variant.schedule,
                    inflight=inflight,
                    seeds=[r.seed for r in mine],
                    measured=[r.measured for r in mine],
                    delay_p50_s=statistics.median(r.delay_p50_s for r in mine),
                    delay_p90_s=statistics.median(r.delay_p90_s for r in mine),
                    delay_p99_s=statistics.median(r.delay_p99_s for r in mine),
                    delay_mean_s=statistics.median(r.delay_mean_s for r in mine),
                    polls_per_task=statistics.median(r.polls_per_task for r in mine),
                    longest_gap_p99_s=statistics.median(r.longest_gap_p99_s for r in mine),
                    longest_gap_max_s=max(r.longest_gap_max_s for r in mine),
                    peak_requests_1s=max(r.peak_requests_1s for r in mine),
                    undetected=sum(r.undetected for r in mine),
                    hit_chance_p50=statistics.median(chances) if chances else None,
                    p50_vs_fixed=[
                        _ratio(r.delay_p50_s, b.delay_p50_s)
                        for r, b in zip(mine, bases, strict=True)
                    ],
                    polls_vs_fixed=[
                        _ratio(r.polls_per_task, b.polls_per_task)
                        for r, b in zip(mine, bases, strict=True)
                    ],
                )
            )
    return out


def targets(summary: Summary) -> list[tuple[str, float, float]]:
    """Issue 5's targets for an adaptive variant: (what, median ratio to fixed, limit)."""
    if summary.schedule != PollSchedule.ADAPTIVE:
        return []
    if saturated(summary.inflight, BUDGET_PER_S):
        return [("p50", summary.p50_ratio, SATURATED_P50_MAX), ("polls", summary.polls_ratio, 1.0)]
    return [("p50", summary.p50_ratio, 1.0), ("polls", summary.polls_ratio, UNSATURATED_POLLS_MAX)]


def _ratios(values: Sequence[float]) -> str:
    each = " ".join(f"{v:.2f}" for v in values)
    return f"{statistics.median(values):.2f} ({each})"


def print_scenario(inflight: int, rows: Sequence[Summary]) -> None:
    fixed_asks = inflight / FIXED_INTERVAL_S
    where = "saturated" if saturated(inflight, BUDGET_PER_S) else "below saturation"
    print(
        f"\nN={inflight}, {where}: fixed 5 s polling asks {fixed_asks:g}/s of "
        f"{BUDGET_PER_S:g}/s; seeds {', '.join(map(str, rows[0].seeds))}, measured tasks "
        f"{', '.join(map(str, rows[0].measured))}"
    )
    header = (
        f"{'variant':<15} {'p50 s':>6} {'p90 s':>6} {'p99 s':>6} {'mean s':>6} {'polls':>6} "
        f"{'gap99':>6} {'gapmax':>6} {'peak/1s':>7} {'undet':>5} {'q':>5}  "
        f"{'p50 x fixed (seeds)':<23} polls x fixed (seeds)"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        chance = f"{r.hit_chance_p50:.2f}" if r.hit_chance_p50 is not None else "-"
        peak = f"{r.peak_requests_1s}/{BUDGET_PER_S:g}"
        print(
            f"{r.variant:<15} {r.delay_p50_s:>6.2f} {r.delay_p90_s:>6.1f} {r.delay_p99_s:>6.1f} "
            f"{r.delay_mean_s:>6.2f} {r.polls_per_task:>6.2f} {r.longest_gap_p99_s:>6.1f} "
            f"{r.longest_gap_max_s:>6.1f} {peak:>7} {r.undetected:>5} {chance:>5}  "
            f"{_ratios(r.p50_vs_fixed):<23} {_ratios(r.polls_vs_fixed)}"
        )
    for r in rows:
        checks = [
            f"{what} {value:.2f}x <= {limit:g}x {'met' if value <= limit else 'MISSED'}"
            for what, value, limit in targets(r)
        ]
        if checks:
            print(f"  target, {r.variant}: {'; '.join(checks)}")


def print_legend(options: Options) -> None:
    print(
        "\nSeconds of the model (real time). Medians over the seeds, except gapmax and peak "
        "(the largest) and undet (the sum).\np50/p90/p99/mean: upstream done -> the file "
        "retrieve that completes the task; polls: status polls per measured task;\ngap99 / "
        "gapmax: p99 / max over measured tasks of the longest each went unpolled; peak/1s: "
        "most requests in any 1 s window;\nundet: measured tasks never detected; q: the hit "
        "chance the forecast set over the measured window; x fixed: ratio to fixed,\nmedian "
        "(each seed) over the same workloads. Targets (issue 5, median ratios): below "
        f"saturation polls <= {UNSATURATED_POLLS_MAX:g}x at p50 <= 1x; saturated p50 <= "
        f"{SATURATED_P50_MAX:g}x at polls <= 1x."
    )


def run_bound(
    options: Options, fixed: dict[int, Summary], seed: int
) -> tuple[dict[str, Any], list[str]]:
    """The bound against fixed's figures; the report and the lines printed."""
    lines: list[str] = []
    report: dict[str, Any] = {"tasks": BOUND_TASKS, "seed": seed}
    base = fixed[BOUND_UNSATURATED]
    for sizes, schedules, unit in ((False, SECONDS_GRID, " s"), (True, UNITS_GRID, "u")):
        sample = bound_sample(BOUND_TASKS, seed, sizes=sizes, horizon_s=options.horizon_s)
        evaluation = Evaluation(sample)
        ranked = costed(evaluation, schedules)
        what = "with sizes (units u of 20 s x size / 1000)" if sizes else "with no size information"
        lines.append(f"{what}, {len(schedules):,} schedules:")
        part: dict[str, Any] = {"schedules": len(schedules)}
        if not sizes:
            reference = Evaluation(sample)
            ref = fixed_reference(sample)
            lines.append(
                f"  (fixed 5 s polling over the same durations, no queue: p50 "
                f"{reference.p50(ref):.2f} s, {reference.polls(ref):.2f} polls/task)"
            )
        best = fewest_polls(evaluation, ranked, base.delay_p50_s)
        part[f"N={BOUND_UNSATURATED}"] = asdict(best) if best else None
        if best is None:
            lines.append(
                f"  N={BOUND_UNSATURATED}: no schedule reaches p50 {base.delay_p50_s:.2f} s"
            )
        else:
            ratio = best.polls_per_task / base.polls_per_task
            lines.append(
                f"  N={BOUND_UNSATURATED:<4} p50 <= {base.delay_p50_s:.2f} s (fixed's): fewest "
                f"{best.polls_per_task:.2f} polls/task = {ratio:.2f}x fixed's "
                f"{base.polls_per_task:.2f} (target <= {UNSATURATED_POLLS_MAX:g}x), p50 "
                f"{best.p50_s:.2f} s"
            )
            lines.append(f"         {best.schedule.describe(unit)}")
        for inflight in BOUND_SATURATED:
            cap = fixed[inflight]
            best = lowest_p50(evaluation, ranked, cap.polls_per_task)
            part[f"N={inflight}"] = asdict(best) if best else None
            if best is None:
                lines.append(f"  N={inflight}: no schedule within {cap.polls_per_task:.2f} polls")
                continue
            lines.append(
                f"  N={inflight:<4} polls/task <= {cap.polls_per_task:.2f} (fixed's): lowest p50 "
                f"{best.p50_s:.2f} s = {best.p50_s / cap.delay_p50_s:.2f}x fixed's "
                f"{cap.delay_p50_s:.2f} s (target <= {SATURATED_P50_MAX:g}x), "
                f"{best.polls_per_task:.2f} polls/task"
            )
            lines.append(f"         {best.schedule.describe(unit)}")
        report["sizes" if sizes else "no_sizes"] = part
    return report, lines


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("give comma-separated integers") from exc
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.schedule_model",
        description="An offline model of bench.adaptive_schedule: detection delay and polls "
        "per task of pollhook's poll schedules under the shared budget, in seconds.",
    )
    parser.add_argument("--inflight", type=_int_list, default=list(DEFAULT_INFLIGHT))
    parser.add_argument(
        "--seeds",
        type=_int_list,
        default=list(DEFAULT_SEEDS),
        help="workload seeds, as bench.adaptive_schedule's --seed (5 is its default)",
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=list(VARIANTS.values()),
        help=f"from {','.join(VARIANTS)} (fixed always runs: the baseline)",
    )
    parser.add_argument("--hit-chance", type=float, help="poll_hit_chance of the adaptive ones")
    parser.add_argument("--lateness", type=float, help="poll_lateness_s of the adaptive ones")
    parser.add_argument("--horizon", type=float, default=HORIZON_S, help="arrival window, s")
    parser.add_argument(
        "--bound", action="store_true", help="also the lower bound against fixed's figures"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.hit_chance is not None and not 0 < args.hit_chance < 1:
        parser.error("--hit-chance must lie between 0 and 1")
    if args.lateness is not None and args.lateness < 0:
        parser.error("--lateness must not be negative")
    if args.horizon * (1 - WARMUP_SHARE) <= TAIL_GRACE_S:
        parser.error("--horizon leaves no measured window after the warm-up and the tail")
    if any(n < 1 for n in args.inflight):
        parser.error("--inflight counts must be positive")
    variants = list(dict.fromkeys([VARIANTS["fixed"], *args.variants]))
    return Options(
        inflight=args.inflight,
        seeds=args.seeds,
        variants=variants,
        hit_chance=args.hit_chance,
        lateness_s=args.lateness,
        horizon_s=args.horizon,
        bound=args.bound,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    meta = describe_machine()
    print(
        f"{meta['date']}  pollhook {meta['revision']}  {meta['implementation']} "
        f"{meta['python']}  {meta['usable_cores']} usable core(s)"
    )
    print(
        f"model of one MiniMax instance: budget {BUDGET_PER_S:g}/s (slots {SLOT_S:.3f} s apart), "
        f"forecast every {REFRESH_S:g} s, {options.horizon_s:g} s of arrivals (+ up to "
        f"{DRAIN_MAX_S:g} s until every measured task is detected), mean task "
        f"{MEAN_DURATION_S:.1f} s"
        + (f", poll_hit_chance {options.hit_chance:g}" if options.hit_chance is not None else "")
        + (f", poll_lateness_s {options.lateness_s:g}" if options.lateness_s is not None else "")
    )
    started = time.perf_counter()
    runs = [
        simulate(
            inflight,
            variant,
            seed,
            horizon_s=options.horizon_s,
            hit_chance=options.hit_chance,
            lateness_s=options.lateness_s,
        )
        for inflight in options.inflight
        for variant in options.variants
        for seed in options.seeds
    ]
    summaries = summarize(runs, options.variants)
    for inflight in options.inflight:
        print_scenario(inflight, [s for s in summaries if s.inflight == inflight])
    print_legend(options)
    model_s = time.perf_counter() - started
    print(f"\n{len(runs)} runs in {model_s:.1f} s")
    report: dict[str, Any] = {
        "meta": {**meta, "options": asdict(options)},
        "runs": [asdict(r) for r in runs],
        "summary": [
            {**asdict(s), "p50_ratio": s.p50_ratio, "polls_ratio": s.polls_ratio} for s in summaries
        ],
    }
    if options.bound:
        started = time.perf_counter()
        fixed = {s.inflight: s for s in summaries if s.variant == VARIANTS["fixed"].name}
        missing = [n for n in (BOUND_UNSATURATED, *BOUND_SATURATED) if n not in fixed]
        extra = [
            simulate(n, VARIANTS["fixed"], seed, horizon_s=options.horizon_s)
            for n in missing
            for seed in options.seeds
        ]
        fixed.update({s.inflight: s for s in summarize(extra, [VARIANTS["fixed"]])})
        report["bound"], lines = run_bound(options, fixed, options.seeds[0])
        print(
            f"\nLower bound: one schedule for every task (first poll at t0, every I to t1, "
            f"then intervals growing x1.5, x2, x3 or at once\nto {MAX_INTERVAL_S:g} s), the "
            f"best of a grid, over {BOUND_TASKS:,} durations of measured tasks (workload "
            f"seeds from {options.seeds[0]}). No queue:\nevery poll at its planned time, the "
            "file retrieve on the next slot; under a binding budget it bounds only what a "
            "queue-free\nschedule could do. Targets: fixed's figures from the model above, "
            "median over the seeds."
        )
        for line in lines:
            print(line)
        print(f"bound in {time.perf_counter() - started:.1f} s")
    write_report(options.json_path, report)
    broken = [r for r in runs if r.undetected or r.peak_requests_1s > BUDGET_PER_S]
    for r in broken:
        print(
            f"BROKEN: {r.variant} N={r.inflight} seed {r.seed}: {r.undetected} undetected, "
            f"peak {r.peak_requests_1s}/1 s"
        )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
