"""Prometheus metrics.

Counters and histograms are per process (each replica is scraped on its own); the gauges
that describe shared state (queue depth, backlog, rates) are read from Postgres at scrape
time, so any process reports the same truth.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
QUEUE_DEPTH = Gauge(
    "pollhook_delivery_queue_depth", "Deliveries waiting to be sent.", registry=REGISTRY
)
OLDEST_PENDING = Gauge(
    "pollhook_delivery_oldest_pending_seconds",
    "Age of the oldest delivery not yet delivered.",
    registry=REGISTRY,
)
DUE_BACKLOG = Gauge(
    "pollhook_provider_due_backlog",
    "Active tasks whose next poll is due, per provider instance.",
    ["provider"],
    registry=REGISTRY,
)
EFFECTIVE_RATE = Gauge(
    "pollhook_provider_effective_rate_per_second",
    "The rate in force for each instance (lower than configured after rate limits).",
    ["provider"],
    registry=REGISTRY,
)
CONFIGURED_RATE = Gauge(
    "pollhook_provider_configured_rate_per_second",
    "The configured rate budget of each instance (0: unlimited).",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_UP = Gauge(
    "pollhook_provider_healthy",
    "1 when the instance's health is ok, 0 when degraded or auth_failed.",
    ["provider"],
    registry=REGISTRY,
)

POLL_DEMAND_RATIO = Gauge(
    "pollhook_provider_poll_demand_ratio",
    "Polls per second the schedule asks for at the instance's own hit chance, over the polls "
    "the budget can give: above 1 the instance is saturated and adaptive plans poll later.",
    ["provider"],
    registry=REGISTRY,
)
EXPECTED_DETECTION_DELAY = Gauge(
    "pollhook_provider_expected_detection_delay_seconds",
    "Expected time from a task finishing upstream to pollhook knowing, per instance.",
    ["provider"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
