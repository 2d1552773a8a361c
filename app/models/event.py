from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, UUIDPk


class Event(Base):
    """The outbox: one row per task status change, written in the same transaction; and an
    endpoint's test event (`webhook.test`, `task_id` null), which goes out the same way."""

    __tablename__ = "events"
    __table_args__ = (
        # One event per status change: a second writer for the same sequence fails here.
        UniqueConstraint("task_id", "sequence", name="uq_events_task_id_sequence"),
        Index("ix_events_tenant_created", "tenant", "created_at"),
    )

    id: Mapped[UUIDPk]
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    tenant: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    sequence: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[CreatedAt]
