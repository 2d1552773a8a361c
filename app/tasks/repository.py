from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import rows_of, rows_param
from app.models import Event, Task
from app.models.task import ACTIVE_STATUSES
from app.webhooks.events import NewEvent

_EVENT_ROWS = rows_of(Event.__table__, ["id", "task_id", "tenant", "type", "sequence", "payload"])

# The channel the tasks_notify_new trigger notifies (migration 0610); the engine LISTENs.
NOTIFY_CHANNEL = "pollhook_tasks"


class TaskRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def now(self) -> datetime:
        """The database clock (transaction start): one clock for every replica."""
        value = await self.session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    async def insert_if_absent(self, values: dict[str, Any]) -> Task | None:
        """Insert unless (tenant, provider, external_id) exists; None when it does.

        A concurrent duplicate blocks on the unique index until the first commits, then
        finds the row: exactly one row, whatever the interleaving.
        """
        stmt = (
            insert(Task)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["tenant", "provider", "external_id"])
            .returning(Task)
        )
        task: Task | None = await self.session.scalar(stmt)
        return task

    async def get_by_external_id(self, tenant: str, provider: str, external_id: str) -> Task | None:
        stmt = select(Task).where(
            Task.tenant == tenant, Task.provider == provider, Task.external_id == external_id
        )
        task: Task | None = await self.session.scalar(stmt)
        return task

    async def get(
        self, tenant: str, task_id: uuid.UUID, *, for_update: bool = False
    ) -> Task | None:
        stmt = select(Task).where(Task.tenant == tenant, Task.id == task_id)
        if for_update:
            stmt = stmt.with_for_update()
        task: Task | None = await self.session.scalar(stmt)
        return task

    async def list_page(
        self,
        tenant: str,
        *,
        limit: int,
        provider: str | None = None,
        status: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Task]:
        """Newest first; keyset on (created_at, id) served by ix_tasks_tenant_created."""
        stmt = select(Task).where(Task.tenant == tenant)
        if provider is not None:
            stmt = stmt.where(Task.provider == provider)
        if status is not None:
            stmt = stmt.where(Task.status == status)
        if after is not None:
            stmt = stmt.where(tuple_(Task.created_at, Task.id) < tuple_(*after))
        stmt = stmt.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))

    async def active_counts(self) -> dict[tuple[str, str], int]:
        """Active tasks per (provider, status), over every tenant."""
        rows = await self.session.execute(
            select(Task.provider, Task.status, func.count())
            .where(Task.status.in_(ACTIVE_STATUSES))
            .group_by(Task.provider, Task.status)
        )
        return {(provider, status): int(count) for provider, status, count in rows}

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        """Insert the events of a set of status changes in one statement."""
        await self.session.execute(
            text(
                f"""
                INSERT INTO events (id, task_id, tenant, type, sequence, payload)
                SELECT id, task_id, tenant, type, sequence, payload FROM {_EVENT_ROWS}
                """
            ),
            {
                "rows": rows_param(
                    {
                        "id": e.id,
                        "task_id": e.task_id,
                        "tenant": e.tenant,
                        "type": e.type.value,
                        "sequence": e.sequence,
                        "payload": e.payload,
                    }
                    for e in events
                )
            },
        )

    async def flush(self) -> None:
        await self.session.flush()
