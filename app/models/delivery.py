from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, UUIDPk, enum_check


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Deliveries that need an operator's eye: still being retried after a failed attempt, or
# given up. ix_deliveries_troubled holds exactly these; a query must spell the condition the
# same way for the planner to use it.
TROUBLED = "status = 'failed' OR (status = 'pending' AND attempts > 0)"


class Delivery(Base):
    """One event to one target (an endpoint, or the task's callback_url). `task_id` is null
    for an endpoint's test event (`webhook.test`), which no task caused."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(enum_check("status", [s.value for s in DeliveryStatus]), name="status"),
        # One delivery per (event, endpoint); NULLS NOT DISTINCT so a task's callback_url
        # (endpoint_id NULL) also gets at most one delivery per event.
        Index(
            "uq_deliveries_event_endpoint",
            "event_id",
            "endpoint_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_deliveries_task", "task_id"),
        # The dashboard's and GET /v1/deliveries' lists, newest first: every tenant's (an
        # operator's), one tenant's, and the troubled set (failing: pending after an attempt;
        # failed), which stays small while the full table holds every delivery ever made.
        Index("ix_deliveries_created", "created_at", "id"),
        Index("ix_deliveries_tenant_created", "tenant", "created_at", "id"),
        Index(
            "ix_deliveries_troubled",
            "created_at",
            "id",
            postgresql_where=text(TROUBLED),
        ),
        # An endpoint's latest attempts: every attempt sets updated_at.
        Index("ix_deliveries_endpoint_updated", "endpoint_id", "updated_at"),
    )

    id: Mapped[UUIDPk]
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("events.id", ondelete="CASCADE")
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    tenant: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[Timestamp | None]
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[Timestamp | None]
    fencing_token: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    completed_at: Mapped[Timestamp | None]


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[CreatedAt]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
