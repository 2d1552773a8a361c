from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, enum_check


class ArchiveJobStatus(StrEnum):
    # Copying, or waiting to retry a copy.
    PENDING = "pending"
    # Every file is in the archive; purge_at says when retention deletes them.
    DONE = "done"
    # Given up: refused, too large, or its source URL died first. Nothing to purge beyond
    # what it copied before it failed.
    FAILED = "failed"
    # Retention deleted the files.
    PURGED = "purged"


class ArchiveJob(Base):
    """The copy of one succeeded task's result files into the archive: a leased queue row,
    one per task (its id is the task's). What consumers see of it is the task's `archive`
    column; this row is the work."""

    __tablename__ = "archive_jobs"
    __table_args__ = (
        CheckConstraint(enum_check("status", [s.value for s in ArchiveJobStatus]), name="status"),
        # The archive loop's claim: pending jobs, oldest due first.
        Index(
            "ix_archive_jobs_due", "next_attempt_at", postgresql_where=text("status = 'pending'")
        ),
        # Retention: archived files whose time is up.
        Index("ix_archive_jobs_purge", "purge_at", postgresql_where=text("purge_at IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    tenant: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default=ArchiveJobStatus.PENDING.value)
    # The files to copy, as the adapter named them: [{kind, url, bundle, expires_at}].
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # Files already in the archive (kept across retries, so a retry copies only the rest).
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # When the task succeeded (the archive lag is measured from it), and when the earliest
    # source URL stops working: retries end there.
    detected_at: Mapped[CreatedAt]
    deadline_at: Mapped[Timestamp]
    # The task's terminal event, held back until this moment unless the copy finishes first.
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    hold_until: Mapped[Timestamp | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[Timestamp | None]
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[Timestamp | None]
    fencing_token: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    finished_at: Mapped[Timestamp | None]
    purge_at: Mapped[Timestamp | None]
