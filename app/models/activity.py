from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt


def _count() -> Mapped[int]:
    return mapped_column(Integer, server_default=text("0"))


def _buckets() -> Mapped[list[int]]:
    return mapped_column(ARRAY(Integer), server_default=text("'{}'"))


class Activity(Base):
    """What one worker process did in a few seconds, on one provider instance: what its own
    counters and histograms gained since its previous row (app/overview/recorder.py). The
    overview sums every process's rows, so it shows the whole deployment without scraping
    any process. Rows live 24 hours."""

    __tablename__ = "activity"
    __table_args__ = (
        # The overview reads the last minutes; the recorder deletes what is a day old.
        Index("ix_activity_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[CreatedAt]
    # The worker's replica id (PollWorker.owner).
    process: Mapped[str] = mapped_column(Text)
    # NULL on the row of webhook deliveries, which belong to no instance.
    provider: Mapped[str | None] = mapped_column(Text)
    # Polls whose answer was written, and of those the ones that ended in an error that is
    # not the task's (transient, rate limit, credentials).
    polls: Mapped[int] = _count()
    poll_errors: Mapped[int] = _count()
    # Tasks a poll found ended: succeeded, and failed, expired or timed out.
    succeeded: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    # Delivery attempts: 2xx, to be retried, given up (or the endpoint gone).
    delivered: Mapped[int] = _count()
    delivery_retries: Mapped[int] = _count()
    delivery_failures: Mapped[int] = _count()
    # Observations per bucket of pollhook_detection_gap_seconds and
    # pollhook_delivery_latency_seconds (app/core/metrics.py), the last for above the top
    # bound; not cumulative, so rows sum element by element.
    detection_gap: Mapped[list[int]] = _buckets()
    delivery_latency: Mapped[list[int]] = _buckets()
