from __future__ import annotations

from sqlalchemy import Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, UUIDPk


class ApiKey(Base):
    """A tenant's API key, stored as the SHA-256 of the key (keys are 256-bit random)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("uq_api_keys_key_hash", "key_hash", unique=True),
        Index("ix_api_keys_tenant", "tenant"),
    )

    id: Mapped[UUIDPk]
    tenant: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    key_prefix: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    revoked_at: Mapped[Timestamp | None]
