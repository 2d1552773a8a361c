from __future__ import annotations

from sqlalchemy import Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import Timestamp


class InboundCallback(Base):
    """A provider callback that passed verification, kept for the replay window so the
    same message again (a replay, or the provider's own retry) changes nothing: by its
    `webhook-id` where the provider signs one, else by the SHA-256 of its body."""

    __tablename__ = "inbound_callbacks"
    __table_args__ = (Index("ix_inbound_callbacks_received", "received_at"),)

    instance: Mapped[str] = mapped_column(Text, primary_key=True)
    message_key: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[Timestamp] = mapped_column(server_default=text("now()"))
