"""What a plan costs and whether an instance's budget can pay for it (pure).

Under a binding budget the hit chance rises (`solve_hit_chance`): fewer, later, likelier
polls per task. The instance's demand is priced per task, not per active task: the
expected polls of the plan a task gets from registration (`schedule_cost`) times the
rate tasks finish, per size class. That is the long-run poll rate of the plan; counting
the intervals of the tasks in flight instead feeds back on itself, since a later poll
keeps a task in flight longer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.budget.capacity import MIN_POLL_SHARE, SPACING_FACTOR, poll_capacity
from app.core.config import PollSchedule, PollSettings, ProviderSettings
from app.schedule.model import CompletionModel
from app.schedule.plans import (
    MAX_HIT_CHANCE,
    ceiling_s,
    effective_hit_chance,
    plan_first,
    plan_next,
)

# Raise the hit chance until demand is this share of the budget: headroom for
# retries, file retrieves and the jitter of many tasks falling due at once.
TARGET_UTILISATION = 0.9

# --- the budget -------------------------------------------------------------------------

# The hit chance the budget calls for is found to within this.
HIT_CHANCE_RESOLUTION = 0.005
# Stop walking a plan once this share of its tasks is left, or after this many polls: a
# forecast walks each size class's plan a dozen times, inline on the leader's event loop.
NEGLIGIBLE_SURVIVAL = 1e-3
MAX_WALKED_POLLS = 200
# Tasks already overdue when the forecast is made should be polled within this long (the
# engine's backlog_drain_s). The shorter it is, the harder the forecast reacts to a
# momentary queue, and a plan's polls follow its hit chance by a task's lifetime: 30 s made
# the hit chance swing between its floor and its ceiling in bench/schedule_model.py.
BACKLOG_DRAIN_S: float = PollSettings.model_fields["backlog_drain_s"].default


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
    interval = ceiling_s(settings)
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


@dataclass(frozen=True)
class InstanceForecast:
    """One instance's forecast: what its budget can carry, how many tasks are in flight,
    and what its plans ask of it."""

    capacity_per_s: float
    active_tasks: int
    saturation: Saturation


def forecast_instance(
    settings: ProviderSettings,
    *,
    rate_per_s: float,
    completions_per_s: dict[int | None, float],
    model_for_class: Callable[[int | None], CompletionModel | None],
    planned: Sequence[tuple[float, int]],
    overdue: int,
    follow_ups_per_success: float,
    drain_s: float,
) -> InstanceForecast:
    """The forecast the refresh stores for an instance (`app/schedule/refresh.py`), from
    its effective rate, its completions per second by size class, its learned models, the
    planned intervals of its tasks in flight and its overdue count."""
    active = sum(n for _, n in planned)
    capacity = poll_capacity(
        rate_per_s,
        spacing_factor=SPACING_FACTOR,
        follow_ups_per_s=sum(completions_per_s.values()) * follow_ups_per_success,
    )
    forecast = saturation(
        priced_workloads(model_for_class, completions_per_s, active=active),
        settings,
        capacity,
        overdue,
        planned=planned,
        drain_s=drain_s,
    )
    return InstanceForecast(capacity, active, forecast)
