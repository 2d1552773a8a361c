from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.core.times import as_utc
from app.webhooks.events import EventType

UrlField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL; must not resolve to a private, loopback, link-local or "
        "otherwise internal address unless POLLHOOK_WEBHOOK_ALLOW_NETWORKS allows it.",
        examples=["https://example.com/hooks/pollhook"],
    ),
]
EventsField = Annotated[
    list[EventType] | None,
    Field(
        min_length=1,
        description="Event types to receive; null (the default) means the terminal ones.",
    ),
]
DescriptionField = Annotated[str | None, Field(max_length=500)]


def _unique(values: list[EventType] | None) -> list[EventType] | None:
    if values is None:
        return None
    return sorted(set(values))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: UrlField
    events: EventsField = None
    description: DescriptionField = None

    _dedupe = field_validator("events")(_unique)


class WebhookUpdate(BaseModel):
    """Fields left out are unchanged; `events: null` restores the terminal-only default."""

    model_config = ConfigDict(extra="forbid")

    url: UrlField | None = None
    events: EventsField = None
    description: DescriptionField = None
    enabled: bool | None = None

    _dedupe = field_validator("events")(_unique)


class WebhookRead(BaseModel):
    id: uuid.UUID
    tenant: str = Field(description="The tenant the endpoint belongs to.")
    url: str
    events: list[EventType] | None
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookRead):
    secret: str | None = Field(
        description="whsec_ + base64: verify deliveries with it. Null for a read-only "
        "operator's key, which may see the endpoint but not sign as it."
    )
    previous_secret_expires_at: datetime | None = Field(
        default=None,
        description="Until then, deliveries are also signed with the secret before the last "
        "rotation.",
    )


class WebhookList(BaseModel):
    items: list[WebhookRead]


class SigningSecret(BaseModel):
    secret: str = Field(description="Signs this tenant's per-task callback_url deliveries.")


class AttemptRead(BaseModel):
    attempt: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    response_body: str | None = Field(description="The first 4 KiB of the response body.")
    error: str | None


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeliveryRead(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID = Field(description="Also the webhook-id header of every attempt.")
    event_type: EventType
    task_id: uuid.UUID | None = Field(description="null: an endpoint's test event.")
    tenant: str
    endpoint_id: uuid.UUID | None = Field(description="null: the task's callback_url.")
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[AttemptRead]


class DeliveryList(BaseModel):
    items: list[DeliveryRead]


class DeliveryPage(DeliveryList):
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DeliveryState(StrEnum):
    """Which deliveries a filter takes, by where they stand."""

    TROUBLED = "troubled"  # failing or failed
    FAILING = "failing"  # pending again after a failed attempt
    FAILED = "failed"  # given up
    DELIVERED = "delivered"
    ALL = "all"


RETRYABLE = (DeliveryState.TROUBLED, DeliveryState.FAILING, DeliveryState.FAILED)


# The most deliveries one bulk retry queues (the newest that match): a larger set is retried
# a call at a time, each confirmed, so no single statement locks an unbounded set of rows.
BULK_RETRY_LIMIT = 10_000


def _iso_only(value: object) -> object:
    """A time given as a date-time, not as a number: lax parsing would read `0.5` (from a
    query string too) as seconds since 1970."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and re.fullmatch(r"\s*[-+]?[\d.]+(e[-+]?\d+)?\s*", value, re.I)
    ):
        raise ValueError("expected an ISO 8601 date-time")
    return value


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


IsoTime = Annotated[datetime | None, BeforeValidator(_iso_only), AfterValidator(_utc)]


class DeliveryFilter(BaseModel):
    """Which deliveries: every field narrows the set; a tenant's key sees only its own."""

    model_config = ConfigDict(extra="forbid")

    status: DeliveryState = Field(
        default=DeliveryState.TROUBLED,
        description="`failing`: still being retried after a failed attempt; `failed`: given "
        "up; `troubled`: both; `delivered`; `all`.",
    )
    endpoint_id: uuid.UUID | None = None
    tenant: str | None = Field(
        default=None,
        max_length=64,
        description="Operators only: one tenant's deliveries (a tenant's key always sees its own).",
    )
    task_id: uuid.UUID | None = None
    created_after: IsoTime = Field(default=None, description="Inclusive.")
    created_before: IsoTime = Field(default=None, description="Exclusive.")


class DeliveryQuery(DeliveryFilter):
    """GET /v1/deliveries' query: the filter and the page."""

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=512)


class BulkRetry(DeliveryFilter):
    """Deliver again everything failing or failed that the filter matches, in two calls:
    without `expected`, the count; with it, the retry, which is refused (409) if more
    deliveries match than were confirmed."""

    status: DeliveryState = Field(
        default=DeliveryState.TROUBLED,
        description="`troubled`, `failing` or `failed`: only these can be retried.",
    )
    expected: int | None = Field(
        default=None,
        ge=0,
        le=BULK_RETRY_LIMIT,
        description="The count the first call answered, as confirmed by the user. Omitted: "
        "nothing is retried, the answer says how many would be.",
    )


class BulkRetryResult(BaseModel):
    matched: int = Field(
        description="Deliveries the filter matches now (at most `limit`), those in flight included."
    )
    retried: int = Field(description="Queued to be delivered now; 0 for a count.")
    limit: int = Field(description="The most one call retries: the newest ones first.")
    as_of: datetime = Field(
        description="The server's clock at the count: pass it as `created_before` to keep "
        "new deliveries out of the set you confirm."
    )


class EndpointSummary(BaseModel):
    endpoint_id: uuid.UUID | None = Field(description="null: tasks' callback_urls.")
    tenant: str
    url: str | None = Field(description="The endpoint's URL; null for callback_urls.")
    failing: int
    failed: int


class DeliverySummary(BaseModel):
    items: list[EndpointSummary]
    complete: bool = Field(
        description="False when there were more troubled deliveries than the summary counts "
        "(the newest ones are counted)."
    )


class RecentAttempt(AttemptRead):
    delivery_id: uuid.UUID
    event_type: EventType
    task_id: uuid.UUID | None


class RecentAttempts(BaseModel):
    items: list[RecentAttempt]
