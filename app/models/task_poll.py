from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base

# How many of a task's polls its log keeps (the newest).
POLL_LOG_SIZE = 25


class TaskPollLog(Base):
    """A task's last POLL_LOG_SIZE polls, oldest first: each `{at, poll, status,
    upstream_status, error}` as the poll left the task. Written by the poll's outcome write
    itself (app/polling/repository.py), in a table of its own so that the tasks row the
    engine updates on every poll stays small."""

    __tablename__ = "task_polls"

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
