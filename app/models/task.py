from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, UUIDPk, enum_check


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.EXPIRED,
        TaskStatus.TIMED_OUT,
        TaskStatus.CANCELLED,
    }
)
ACTIVE_STATUSES = [s.value for s in TaskStatus if s not in TERMINAL_STATUSES]
ACTIVE_SQL = "status IN ('pending', 'queued', 'processing')"
ENDED_BADLY_SQL = "'failed', 'expired', 'timed_out', 'cancelled'"


class Task(Base):
    """A task that lives at an upstream provider, tracked until it is terminal."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint(
            "tenant", "provider", "external_id", name="uq_tasks_tenant_provider_external_id"
        ),
        CheckConstraint(enum_check("status", [s.value for s in TaskStatus]), name="status"),
        # The poll loop's claim: due tasks of one provider instance, oldest due first (the rest
        # of a batch after each tenant's share), and the instance's next due time.
        # Partial, so terminal tasks (the vast majority over time) cost nothing here.
        Index(
            "ix_tasks_due",
            "provider",
            "next_poll_at",
            postgresql_where=text(ACTIVE_SQL),
        ),
        # The claim's share per tenant: the tenants with active tasks on an instance, each
        # with its oldest due time first (app/core/repository.py, fair_claim_statement).
        Index(
            "ix_tasks_due_tenant",
            "provider",
            "tenant",
            "next_poll_at",
            postgresql_where=text(ACTIVE_SQL),
        ),
        # Listing: one tenant's tasks, newest first, keyset on (created_at, id).
        Index("ix_tasks_tenant_created", "tenant", text("created_at DESC"), text("id DESC")),
        # The same over every tenant's, for operators.
        Index("ix_tasks_created", text("created_at DESC"), text("id DESC")),
        # One tenant's tasks that ended badly, by status, newest first: the dashboard's "what
        # failed" filter, which the walk of ix_tasks_tenant_created would make a scan of all
        # the tenant's tasks when few failed. Partial: a task enters it only when it ends so.
        Index(
            "ix_tasks_ended_badly",
            "tenant",
            "status",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text(f"status IN ({ENDED_BADLY_SQL})"),
        ),
        # A provider callback's task: the active tasks of an instance by upstream id, every
        # tenant's (app/inbound). Partial: only a task still tracked can be hinted.
        Index(
            "ix_tasks_active_external",
            "provider",
            "external_id",
            postgresql_where=text(ACTIVE_SQL),
        ),
        # Lease recovery: claimed tasks whose lease ran out.
        Index(
            "ix_tasks_lease_expiry",
            "lease_expires_at",
            postgresql_where=text("lease_expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[UUIDPk]
    tenant: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default=TaskStatus.PENDING.value)
    upstream_status: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    callback_url: Mapped[str | None] = mapped_column(Text)
    deadline_s: Mapped[int | None] = mapped_column(Integer)
    # The client's measure of the task's size (MiniMax: characters of text): completion
    # times are learned per size class when it is given.
    size_hint: Mapped[int | None] = mapped_column(BigInteger)
    # The median of the learned completion times, given how long the task has run already.
    estimated_ready_at: Mapped[Timestamp | None]
    polls: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    sequence: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    completed_at: Mapped[Timestamp | None]
    deadline_at: Mapped[Timestamp]
    # Engine state: when to poll next, who holds the task, and the fencing token that a
    # lease holder must still match for its write to count.
    next_poll_at: Mapped[Timestamp | None]
    last_polled_at: Mapped[Timestamp | None]
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[Timestamp | None]
    fencing_token: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unchanged_polls: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    consecutive_errors: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The delay the schedule planned last (before jitter): until an instance has learned
    # its completion times, its poll demand is the sum of 1/poll_interval_s over its
    # active tasks.
    poll_interval_s: Mapped[float | None] = mapped_column(Float)
    # Why the task waits: {reason, code, message, at} of the last poll that failed, cleared
    # by the next answer and when the task ends.
    poll_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Written by the previous version (a text form of poll_error); kept so that its replicas
    # keep working through a rolling upgrade, and dropped by a later migration.
    last_poll_error: Mapped[str | None] = mapped_column(Text)
    last_response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The adapter's progress within a poll that takes more than one request (MiniMax: the
    # file_id of a task that said Success, so the next poll goes straight to the File
    # Retrieve). Opaque to the engine; cleared when the task ends.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # What the archive holds of the task's result files, as consumers are shown it:
    # {status, files: [{kind, name, key, sha256, bytes, content_type}], error, archived_at,
    # deleted_at}; NULL when nothing is archived for it (app/archive). The work itself is
    # queued in archive_jobs.
    archive: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # A provider callback arrived while a poll was in flight (app/inbound): that poll's
    # answer may predate what the callback announced, so its outcome plans the next poll as
    # soon as min_poll_interval_s allows. (Last: columns follow their migrations' order.)
    poll_again: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    def __repr__(self) -> str:
        return f"Task(id={self.id!s}, provider={self.provider}, status={self.status})"


class TaskView(Protocol):
    """What a task shows (the API's task, a webhook's snapshot): a loaded `Task`, or a row
    of the same columns read without the ORM (registration)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def provider(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def result(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def metadata_(self) -> dict[str, Any]: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def deadline_s(self) -> int | None: ...
    @property
    def size_hint(self) -> int | None: ...
    @property
    def polls(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def next_poll_at(self) -> datetime | None: ...
    @property
    def estimated_ready_at(self) -> datetime | None: ...
    @property
    def deadline_at(self) -> datetime: ...
    @property
    def poll_error(self) -> dict[str, Any] | None: ...
    @property
    def archive(self) -> dict[str, Any] | None: ...
