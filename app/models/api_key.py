from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, UUIDPk, enum_check


class Role(StrEnum):
    """What a key may do. A tenant sees and changes its own tasks, endpoints and deliveries;
    an operator sees and changes every tenant's; a read-only operator sees everything and
    changes nothing."""

    TENANT = "tenant"
    OPERATOR = "operator"
    OPERATOR_READ = "operator_read"


class ApiKey(Base):
    """A tenant's or an operator's API key, stored as the SHA-256 of the key (keys are 256-bit
    random). `tenant` is the tenant the key acts for, or the operator's name."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("uq_api_keys_key_hash", "key_hash", unique=True),
        Index("ix_api_keys_tenant", "tenant"),
        CheckConstraint(enum_check("role", [r.value for r in Role]), name="role"),
    )

    id: Mapped[UUIDPk]
    tenant: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    key_prefix: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text, server_default=text("'tenant'"))
    created_at: Mapped[CreatedAt]
    revoked_at: Mapped[Timestamp | None]
