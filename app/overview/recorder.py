"""Every few seconds, what this process's own counters and histograms gained since the last
time, written as `activity` rows: the dashboard's overview sums them over every process.

Nothing is added to a poll's or a delivery's path: they count into the Prometheus metrics
as they always did, and this reads the metrics' totals on the worker's scheduler.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.logging import get_logger
from app.core.metrics import (
    DELIVERIES,
    DELIVERY_LATENCY_SECONDS,
    DETECTION_GAP_SECONDS,
    POLLS,
    TASK_OUTCOMES,
)
from app.overview.repository import COUNTERS, ActivityRepository, Counts

log = get_logger("pollhook.overview")

RECORD_INTERVAL_S = 5
KEEP_S = 24 * 3600

# pollhook_polls_total outcomes: a slot missed sent nothing; these were errors that are not
# the task's own.
_NOT_SENT = {"slot_missed"}
_ERRORS = {"transient_error", "rate_limited", "credential_error"}
_DELIVERY_COLUMNS = {
    "delivered": "delivered",
    "retry": "delivery_retries",
    "give_up": "delivery_failures",
    "endpoint_gone": "delivery_failures",
}


@dataclass
class _Totals:
    """A process's totals so far, by instance (None: deliveries)."""

    counters: dict[str | None, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    gap: dict[str | None, list[float]] = field(default_factory=dict)
    latency: dict[str | None, list[float]] = field(default_factory=dict)


def _samples(metric: Counter | Histogram, suffix: str) -> Iterable[tuple[dict[str, str], float]]:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix:
                yield sample.labels, sample.value


def _per_bucket(metric: Histogram, by: str | None) -> dict[str | None, list[float]]:
    """Each series' observations per bucket (not cumulative), in bucket order."""
    cumulative: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    for labels, value in _samples(metric, "_bucket"):
        key: str | None = labels[by] if by else None
        cumulative[key].append((float(labels["le"]), value))
    result = {}
    for key, points in cumulative.items():
        counts = [value for _, value in sorted(points)]
        result[key] = [b - a for a, b in zip([0.0, *counts], counts, strict=False)]
    return result


def read_totals() -> _Totals:
    totals = _Totals()
    for labels, value in _samples(POLLS, "_total"):
        outcome = labels["outcome"]
        if outcome in _NOT_SENT:
            continue
        row = totals.counters[labels["provider"]]
        row["polls"] += value
        if outcome in _ERRORS:
            row["poll_errors"] += value
    for labels, value in _samples(TASK_OUTCOMES, "_total"):
        column = "succeeded" if labels["status"] == "succeeded" else "failed"
        totals.counters[labels["provider"]][column] += value
    for labels, value in _samples(DELIVERIES, "_total"):
        counted = _DELIVERY_COLUMNS.get(labels["outcome"])
        if counted is not None:
            totals.counters[None][counted] += value
    totals.gap = _per_bucket(DETECTION_GAP_SECONDS, "provider")
    totals.latency = _per_bucket(DELIVERY_LATENCY_SECONDS, None)
    return totals


def _gained(now: list[float] | None, before: list[float] | None) -> list[int]:
    if not now:
        return []
    base = before or [0.0] * len(now)
    return [round(n - b) for n, b in zip(now, base, strict=True)]


def gained(now: _Totals, before: _Totals) -> list[tuple[str | None, Counts]]:
    """Per instance (None: deliveries), what `now` holds beyond `before`; only instances
    that did something."""
    rows = []
    keys = set(now.counters) | set(now.gap) | set(now.latency)
    for key in sorted(keys, key=lambda k: (k is not None, k or "")):
        current = now.counters.get(key, {})
        previous = before.counters.get(key, {})
        counts = Counts(
            **{n: round(current.get(n, 0.0) - previous.get(n, 0.0)) for n in COUNTERS},
            detection_gap=_gained(now.gap.get(key), before.gap.get(key)),
            delivery_latency=_gained(now.latency.get(key), before.latency.get(key)),
        )
        if counts:
            rows.append((key, counts))
    return rows


class ActivityRecorder:
    """The worker's scheduled job (`record`, every RECORD_INTERVAL_S)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], process: str) -> None:
        self.sessions = sessions
        self.process = process
        # What the process counted before this recorder began is not its to report (another
        # engine in the same process, as in the tests).
        self.reported = read_totals()

    async def record(self) -> None:
        totals = read_totals()
        rows = gained(totals, self.reported)
        try:
            async with self.sessions.begin() as session:
                repo = ActivityRepository(session)
                await repo.add(self.process, rows)
                await repo.prune(KEEP_S)
        except Exception as exc:
            # What was not written is still owed: the next run reports it with its own.
            log.warning("activity_record_failed", error=type(exc).__name__)
            return
        self.reported = totals
