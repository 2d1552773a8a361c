from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    task_id: uuid.UUID
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
