"""Prometheus metrics.

Counters and histograms are per process (each replica is scraped on its own). What describes
state shared by all replicas (queue depth, backlog, rates, tasks by status) is read from
Postgres at scrape time into a `SharedSnapshot`, so any process reports the same truth. A
value that is unknown (no forecast yet, nothing pending, the engine never ran, the database
unreachable) is left out of the scrape rather than reported as 0, which would read as a
real measurement.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter(
    "pollhook_polls_total",
    "Upstream polls by provider instance and outcome.",
    ["provider", "outcome"],
    registry=REGISTRY,
)
BUDGET_SLOTS = Counter(
    "pollhook_budget_slots_reserved_total",
    "Send slots reserved from each instance's shared rate budget.",
    ["provider"],
    registry=REGISTRY,
)
BUDGET_SLOTS_MISSED = Counter(
    "pollhook_budget_slots_missed_total",
    "Reserved send slots that went by with no request ready to leave on them.",
    ["provider"],
    registry=REGISTRY,
)
# The arrival jitter the rate budget keeps a margin for (app/budget/capacity.py,
# ARRIVAL_JITTER_S) is this delay plus the network's and the upstream's; only this part is
# ours to see. No other task runs between the check and the write (app/core/http_stream.py),
# so what it holds beyond a fraction of a millisecond is the process waiting for a CPU.
# Buckets around the 17 ms margin.
SEND_DELAY_SECONDS = Histogram(
    "pollhook_upstream_send_delay_seconds",
    "Time from a rate-budgeted request's last send check to its headers being handed to "
    "the socket.",
    buckets=(0.001, 0.002, 0.005, 0.008, 0.012, 0.015, 0.017, 0.02, 0.025, 0.035, 0.05, 0.1),
    registry=REGISTRY,
)
TASK_OUTCOMES = Counter(
    "pollhook_task_outcomes_total",
    "Tasks that reached a terminal status in this process, by provider instance and status.",
    ["provider", "status"],
    registry=REGISTRY,
)
# When a poll finds a task ended, the time since that task's previous poll (since its
# registration for its first): the most the upstream can have been done before pollhook
# knew. The overview's detection delay is read from these buckets (app/overview).
DETECTION_GAP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
DETECTION_GAP_SECONDS = Histogram(
    "pollhook_detection_gap_seconds",
    "For a poll that found its task ended upstream: seconds since the task's previous poll "
    "(its registration, for a first poll), an upper bound of how late pollhook noticed.",
    ["provider"],
    buckets=DETECTION_GAP_BUCKETS,
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "pollhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, give_up, endpoint_gone).",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "pollhook_delivery_attempt_seconds",
    "Duration of webhook delivery attempts.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
    registry=REGISTRY,
)
DELIVERY_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
DELIVERY_LATENCY_SECONDS = Histogram(
    "pollhook_delivery_latency_seconds",
    "From an event's creation to a 2xx answer from the endpoint it was delivered to, "
    "retries included.",
    buckets=DELIVERY_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ARCHIVED_FILES = Counter(
    "pollhook_archive_files_total",
    "Result files copied into the archive.",
    registry=REGISTRY,
)
ARCHIVED_BYTES = Counter(
    "pollhook_archive_bytes_total",
    "Bytes of result files copied into the archive.",
    registry=REGISTRY,
)
ARCHIVE_FAILURES = Counter(
    "pollhook_archive_failures_total",
    "Failed tries to archive a task's result files, by reason (refused, too_large, "
    "expired, http_error, unreachable, bad_bundle, store) and whether the archive gave up.",
    ["reason", "final"],
    registry=REGISTRY,
)
ARCHIVE_DEADLINE_MISSES = Counter(
    "pollhook_archive_deadline_misses_total",
    "Archives given up because the provider's URL died before the copy finished: the goal is 0.",
    registry=REGISTRY,
)
ARCHIVE_LAG_SECONDS = Histogram(
    "pollhook_archive_lag_seconds",
    "From the poll that found a task succeeded to its files all archived.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600, 21600),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "pollhook_http_requests_total",
    "API requests by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "pollhook_http_request_duration_seconds",
    "API request duration by method and route template, until the response is sent.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# Requests that matched no route share one label, so probes of random paths cannot grow the
# series without bound.
UNMATCHED_ROUTE = "(unmatched)"


@dataclass(frozen=True)
class ProviderSnapshot:
    """One provider instance as Postgres sees it; None where there is no value yet."""

    name: str
    configured_rate_per_s: float
    due_backlog: int
    # As the last forecast counted them (one scan per period for all replicas, not one per
    # scrape); None before the first, and once it is stale (app/health/service.py).
    tasks_by_status: Mapping[str, int] | None
    forecast_age_s: float | None = None
    effective_rate_per_s: float | None = None
    healthy: bool | None = None
    poll_demand_ratio: float | None = None
    expected_detection_delay_s: float | None = None


@dataclass(frozen=True)
class SharedSnapshot:
    delivery_queue_depth: int
    oldest_pending_delivery_s: float | None
    providers: list[ProviderSnapshot] = field(default_factory=list)
    # Archive jobs copying or waiting to retry, and how long ago the oldest one's task
    # succeeded: the archive's lag as it stands.
    archive_pending: int = 0
    oldest_pending_archive_s: float | None = None


class SharedStateCollector(Collector):
    """Serves the latest snapshot; nothing at all while there is none."""

    def __init__(self) -> None:
        self.snapshot: SharedSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        yield _gauge(
            "pollhook_delivery_queue_depth",
            "Deliveries waiting to be sent.",
            value=snapshot.delivery_queue_depth,
        )
        if snapshot.oldest_pending_delivery_s is not None:
            yield _gauge(
                "pollhook_delivery_oldest_pending_seconds",
                "Age of the oldest delivery not yet delivered; absent when none is pending.",
                value=snapshot.oldest_pending_delivery_s,
            )
        yield _gauge(
            "pollhook_archive_pending",
            "Succeeded tasks whose files are being archived or wait to retry.",
            value=snapshot.archive_pending,
        )
        if snapshot.oldest_pending_archive_s is not None:
            yield _gauge(
                "pollhook_archive_oldest_pending_seconds",
                "Since the oldest pending archive's task succeeded; absent when none is pending.",
                value=snapshot.oldest_pending_archive_s,
            )
        providers = snapshot.providers
        tasks = GaugeMetricFamily(
            "pollhook_tasks",
            "Active tasks by provider instance and status, as the last forecast counted them "
            "(terminal ones are counted by pollhook_task_outcomes_total); absent before the "
            "first forecast and while the last is older than three forecast periods.",
            labels=["provider", "status"],
        )
        for p in providers:
            for status, count in sorted((p.tasks_by_status or {}).items()):
                tasks.add_metric([p.name, status], count)
        yield tasks
        per_provider: list[tuple[str, str, list[tuple[str, float | None]]]] = [
            (
                "pollhook_provider_forecast_age_seconds",
                "Seconds since the instance's last forecast (its task counts, poll demand and "
                "detection delay); absent before the first. It grows while no worker runs "
                "the forecast refresh.",
                [(p.name, p.forecast_age_s) for p in providers],
            ),
            (
                "pollhook_provider_due_backlog",
                "Active tasks whose next poll is due, per provider instance.",
                [(p.name, p.due_backlog) for p in providers],
            ),
            (
                "pollhook_provider_configured_rate_per_second",
                "The configured rate budget of each instance (0: unlimited).",
                [(p.name, p.configured_rate_per_s) for p in providers],
            ),
            (
                "pollhook_provider_effective_rate_per_second",
                "The rate in force for each instance (lower than configured after rate "
                "limits); absent until an engine has started the instance.",
                [(p.name, p.effective_rate_per_s) for p in providers],
            ),
            (
                "pollhook_provider_healthy",
                "1 when the instance's health is ok, 0 when degraded or auth_failed; absent "
                "until an engine has started the instance.",
                [(p.name, None if p.healthy is None else float(p.healthy)) for p in providers],
            ),
            (
                "pollhook_provider_poll_demand_ratio",
                "Polls per second the schedule asks for at the instance's own hit chance, over "
                "the polls the budget can give: above 1 the instance is saturated and adaptive "
                "plans poll later. Absent before the first forecast and for unlimited instances.",
                [(p.name, p.poll_demand_ratio) for p in providers],
            ),
            (
                "pollhook_provider_expected_detection_delay_seconds",
                "Expected time from a task finishing upstream to pollhook knowing, per "
                "instance; absent before the first forecast.",
                [(p.name, p.expected_detection_delay_s) for p in providers],
            ),
        ]
        for name, documentation, values in per_provider:
            family = GaugeMetricFamily(name, documentation, labels=["provider"])
            for provider, value in values:
                if value is not None:
                    family.add_metric([provider], value)
            yield family


def _gauge(name: str, documentation: str, *, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


SHARED_STATE = SharedStateCollector()
REGISTRY.register(SHARED_STATE)


def render() -> bytes:
    return generate_latest(REGISTRY)


INBOUND_CALLBACKS = Counter(
    "pollhook_inbound_callbacks_total",
    "Provider callbacks by instance and what became of them: hinted (a task polled now), "
    "unknown_task, replayed, forged, malformed, refused (an instance that takes none).",
    ["provider", "result"],
    registry=REGISTRY,
)
