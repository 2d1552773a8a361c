from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt


class CompletionSample(Base):
    """One finished task's completion age: what the adaptive schedule learns from.

    Append-only, one row per task that finished upstream (written in the transaction of
    its terminal status); pruned to the most recent window per instance and size class.
    """

    __tablename__ = "completion_samples"
    __table_args__ = (
        Index("ix_completion_samples_provider_class", "provider", "size_class", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(Text)
    size_class: Mapped[int | None] = mapped_column(SmallInteger)
    # Seconds from registration to the middle of the last interval between polls in
    # which the task finished: the completion is known only to lie in that interval.
    duration_s: Mapped[float] = mapped_column(Float)
    observed_at: Mapped[CreatedAt]


class CompletionProfile(Base):
    """The learned distribution of one instance (size_class -1) or one of its size classes:
    percentiles 0..100 of the recent completion ages, shared by every replica."""

    __tablename__ = "completion_profiles"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    size_class: Mapped[int] = mapped_column(Integer, primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    quantiles: Mapped[list[float]] = mapped_column(ARRAY(Float))
    refreshed_at: Mapped[CreatedAt]
