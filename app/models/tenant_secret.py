from __future__ import annotations

from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt


class TenantSecret(Base):
    """The secret that signs a tenant's per-task callback_url deliveries."""

    __tablename__ = "tenant_secrets"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
