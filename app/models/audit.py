from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, UUIDPk, enum_check

AUDIT_RESULTS = ["ok", "denied"]


class AuditEntry(Base):
    """One change asked of pollhook through its API or dashboard: who, what, on which
    object, when, and whether it was made. Written in the transaction of the change itself
    (a refusal in one of its own), so the log holds exactly the changes that happened."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(enum_check("result", AUDIT_RESULTS), name="result"),
        # Newest first, keyset on (at, id); and the same for one tenant's objects.
        Index("ix_audit_log_at", text("at DESC"), text("id DESC")),
        Index("ix_audit_log_tenant_at", "tenant", text("at DESC"), text("id DESC")),
    )

    id: Mapped[UUIDPk]
    at: Mapped[CreatedAt]
    # Caller.actor: "tenant:acme" or "operator:alice".
    actor: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    # Dotted verbs: "delivery.retry", "webhook.rotate_secret", "provider.pause", ...
    action: Mapped[str] = mapped_column(Text)
    # "delivery:<uuid>", "webhook:<uuid>", "provider:minimax", or a filter for bulk actions.
    target: Mapped[str] = mapped_column(Text)
    # The tenant whose object it was; NULL for what belongs to no tenant (a provider instance).
    tenant: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
