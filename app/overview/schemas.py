from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.providers.schemas import ProviderRead


class Bucket(BaseModel):
    le_s: float | None = Field(description="The bucket's upper bound; null: above the last.")
    count: int


class Distribution(BaseModel):
    """Observations of every worker process over the window, by bucket, with quantiles read
    from the buckets (linear within one); the quantiles are null with no observation."""

    count: int
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    buckets: list[Bucket]


class MinuteActivity(BaseModel):
    minute: datetime = Field(description="The minute's start.")
    polls: int
    poll_errors: int
    succeeded: int
    failed: int = Field(description="Tasks found failed, expired or timed out.")
    delivered: int
    delivery_retries: int
    delivery_failures: int


class InstanceActivity(BaseModel):
    provider: ProviderRead = Field(description="As `GET /v1/providers` shows it.")
    polls_per_s: float = Field(description="Polls over the last minute, every replica's.")
    budget_used: float | None = Field(
        description="polls_per_s over the effective rate; null for an unlimited instance."
    )


class Overview(BaseModel):
    """The whole deployment at a glance. The activity figures are what the worker
    processes recorded every few seconds (`activity`); an API-only deployment shows none."""

    at: datetime
    window_minutes: int = Field(description="The span of `minutes` and the distributions.")
    active_tasks: dict[str, int] = Field(
        description="Tracked tasks by status over every instance, as the last forecasts "
        "counted them (each instance's are in its `saturation.tasks_by_status`)."
    )
    polls_per_s: float = Field(description="Over the last minute.")
    deliveries_per_s: float = Field(
        description="Delivery attempts per second over the last minute, whatever their answer."
    )
    delivered_per_s: float
    minutes: list[MinuteActivity] = Field(
        description="Per minute over the window, oldest first, every minute present."
    )
    detection_gap: Distribution = Field(
        description="For each task a poll found ended: the time since its previous poll, the "
        "most pollhook can have been late to notice (pollhook_detection_gap_seconds)."
    )
    delivery_latency: Distribution = Field(
        description="From an event's creation to a 2xx answer (pollhook_delivery_latency_seconds)."
    )
    instances: list[InstanceActivity]
