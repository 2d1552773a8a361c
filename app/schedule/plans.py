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

How much a plan costs, and the higher hit chance a binding budget calls for, are in
`app/schedule/pricing.py`.

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

import random
from datetime import datetime, timedelta

from app.core.config import PollSchedule, ProviderSettings
from app.schedule.model import CompletionModel

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


# The highest hit chance the budget may call for. Past it a plan's cost curve is flat (a
# typical distribution: 2.1 polls per task at 0.5, 1.6 at 0.7, 1.4 at 0.95) while its delay
# grows fast (11, 22, 37 s), so small swings in the completion rate swung the hit chance
# from 0.45 to 0.95 and back; the queue, longest overdue first, takes the excess better.
MAX_HIT_CHANCE = 0.6


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


def stretch(settings: ProviderSettings) -> float:
    """How many times further apart planned polls are: callback_poll_stretch while the
    instance takes provider callbacks (they say when to poll; polling is the safety net)."""
    return settings.callback_poll_stretch if settings.callbacks_on else 1.0


def ceiling_s(settings: ProviderSettings) -> float:
    """The longest a planned poll waits: max_poll_interval_s, stretched."""
    return settings.max_poll_interval_s * stretch(settings)


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
    return _planned_next(settings, age_s, unchanged_polls, model, hit_chance) * stretch(settings)


def _planned_next(
    settings: ProviderSettings,
    age_s: float,
    unchanged_polls: int,
    model: CompletionModel | None,
    hit_chance: float | None,
) -> float:
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
    distribution says so (never later than max_poll_interval_s); stretched while the
    instance takes callbacks."""
    return _planned_first(settings, model, hit_chance) * stretch(settings)


def _planned_first(
    settings: ProviderSettings, model: CompletionModel | None, hit_chance: float | None
) -> float:
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
