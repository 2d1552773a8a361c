from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    column,
    func,
    literal_column,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import (
    JSONB,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.repository import arrays_of, of_tenant, rows_of, rows_param
from app.models import Event, Task, TaskPollLog, TaskStatus, TaskView
from app.webhooks.events import NewEvent

_EVENT_ROWS = rows_of(Event.__table__, ["id", "task_id", "tenant", "type", "sequence", "payload"])

# The channel the tasks_notify_new trigger notifies (once per provider instance and
# statement, migration 1400); the engine LISTENs.
NOTIFY_CHANNEL = "pollhook_tasks"

# A task of one tenant: (provider, external_id), the external_id normalized.
TaskKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class NewTaskRow:
    """One registration, validated and planned: what `insert_or_get` writes."""

    provider: str
    external_id: str
    metadata: dict[str, Any]
    # The metadata as sent to the database, measured against max_metadata_bytes.
    metadata_json: str
    callback_url: str | None
    deadline_s: int | None
    size_hint: int | None
    # Seconds from the database clock's now: the first poll, the estimated completion
    # (None: no estimate) and the deadline.
    first_poll_s: float
    ready_s: float | None
    deadline_after_s: int

    @property
    def key(self) -> TaskKey:
        return (self.provider, self.external_id)


# One statement for one registration or a thousand: the rows arrive as arrays (one prepared
# statement whatever their number), get their ids and the database clock's timestamps from
# the database (generated in Python, the ids cost a batch 5 % of its CPU), and come back
# with the rows that existed already, every column in the model's order (a table's order is
# the order its migrations added them). `inserted` and the read of `tasks` share the
# statement's snapshot, so a row this statement inserts is returned once, as created.
_COLUMNS = [c.name for c in Task.__table__.c]
_GIVEN = arrays_of(
    {
        "provider": "text",
        "external_id": "text",
        "metadata": "text",
        "callback_url": "text",
        "deadline_s": "integer",
        "size_hint": "bigint",
        "first_poll_s": "float8",
        "ready_s": "float8",
        "deadline_after_s": "float8",
    },
    alias="g",
    ordinality="ord",
)
_INSERT_OR_GET = (
    text(
        f"""
        WITH given AS (SELECT * FROM {_GIVEN}),
        inserted AS (
            INSERT INTO tasks (
                id, tenant, provider, external_id, status, metadata, callback_url,
                deadline_s, size_hint, created_at, updated_at, next_poll_at, poll_interval_s,
                estimated_ready_at, deadline_at
            )
            SELECT
                gen_random_uuid(), :tenant, provider, external_id, :status, metadata::jsonb,
                callback_url, deadline_s, size_hint, now(), now(),
                now() + make_interval(secs => first_poll_s), first_poll_s,
                now() + make_interval(secs => ready_s),
                now() + make_interval(secs => deadline_after_s)
            FROM given
            ORDER BY ord
            ON CONFLICT (tenant, provider, external_id) DO NOTHING
            RETURNING {", ".join(_COLUMNS)}
        )
        SELECT inserted.*, true AS created FROM inserted
        UNION ALL
        SELECT {", ".join(f"tasks.{name}" for name in _COLUMNS)}, false AS created
        FROM tasks JOIN given USING (provider, external_id)
        WHERE tasks.tenant = :tenant
        """
    )
    # Read as rows, not ORM objects (a tenth of the CPU for a batch): the metadata column
    # under the model's attribute name, so that a row reads as a TaskView.
    .columns(
        *(column("metadata_", JSONB) if c.name == "metadata" else c for c in Task.__table__.c),
        column("created", Boolean),
    )
)


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """What a task list is narrowed to, besides its tenant. `providers` lists the provider
    instances an external id may be at when `provider` is None (every configured one)."""

    provider: str | None = None
    status: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    external_id: str | None = None
    providers: tuple[str, ...] = ()


NO_FILTERS = TaskFilters()

# The distinct tenants of `tasks`, one index probe each on ix_tasks_tenant_created's first
# column (a loose index scan), as `t(tenant)` with a NULL last row.
_TENANTS = """
    (WITH RECURSIVE t(tenant) AS (
        (SELECT tenant FROM tasks ORDER BY tenant LIMIT 1)
        UNION ALL
        SELECT (SELECT tasks.tenant FROM tasks WHERE tasks.tenant > t.tenant
                ORDER BY tasks.tenant LIMIT 1)
        FROM t WHERE t.tenant IS NOT NULL
    ) SELECT tenant FROM t) AS t
"""


def _conditions(
    filters: TaskFilters, after: tuple[datetime, uuid.UUID] | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.provider is not None:
        conditions.append(Task.provider == filters.provider)
    if filters.external_id is not None:
        conditions.append(Task.external_id == filters.external_id)
        if filters.provider is None and filters.providers:
            conditions.append(Task.provider.in_(filters.providers))
    if filters.status is not None:
        conditions.append(Task.status == filters.status)
    if filters.created_from is not None:
        conditions.append(Task.created_at >= filters.created_from)
    if filters.created_before is not None:
        conditions.append(Task.created_at < filters.created_before)
    if after is not None:
        conditions.append(tuple_(Task.created_at, Task.id) < tuple_(*after))
    return conditions


class TaskRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def now(self) -> datetime:
        """The database clock (transaction start): one clock for every replica."""
        value = await self.session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    async def insert_or_get(
        self, tenant: str, rows: Sequence[NewTaskRow]
    ) -> dict[TaskKey, tuple[TaskView, bool]]:
        """Insert each row unless its (tenant, provider, external_id) exists, and return every
        key's task with whether this statement created it: one statement, one round trip.

        Rows are inserted in key order (the caller sorts them), so two batches with
        overlapping keys wait on each other's index entries in the same order and never
        deadlock. A key that a concurrent, not yet committed registration holds is missing
        from the answer: the INSERT waits for that one to commit and then skips the key, but
        the existing-row half of the statement reads the snapshot taken before it. Read such
        keys again with `get_by_keys`, in a statement of its own that sees the commit.
        """
        if not rows:
            return {}
        # On the session's connection, in its transaction: a text statement gains nothing
        # from the ORM's execution, which cost more CPU than the statement's own handling.
        connection = await self.session.connection()
        result = await connection.execute(
            _INSERT_OR_GET,
            {
                "tenant": tenant,
                "status": TaskStatus.PENDING.value,
                "provider": [r.provider for r in rows],
                "external_id": [r.external_id for r in rows],
                "metadata": [r.metadata_json for r in rows],
                "callback_url": [r.callback_url for r in rows],
                "deadline_s": [r.deadline_s for r in rows],
                "size_hint": [r.size_hint for r in rows],
                "first_poll_s": [r.first_poll_s for r in rows],
                "ready_s": [r.ready_s for r in rows],
                "deadline_after_s": [float(r.deadline_after_s) for r in rows],
            },
        )
        return {
            (row.provider, row.external_id): (cast(TaskView, row), row.created)
            for row in result.all()
        }

    async def get_by_keys(self, tenant: str, keys: Sequence[TaskKey]) -> dict[TaskKey, TaskView]:
        if not keys:
            return {}
        stmt = select(Task).where(
            Task.tenant == tenant,
            tuple_(Task.provider, Task.external_id).in_([tuple(k) for k in keys]),
        )
        return {
            (task.provider, task.external_id): task for task in await self.session.scalars(stmt)
        }

    async def get(
        self, tenant: str | None, task_id: uuid.UUID, *, for_update: bool = False
    ) -> Task | None:
        stmt = select(Task).where(of_tenant(Task.tenant, tenant), Task.id == task_id)
        if for_update:
            stmt = stmt.with_for_update()
        task: Task | None = await self.session.scalar(stmt)
        return task

    async def poll_log(self, task_id: uuid.UUID) -> list[dict[str, Any]]:
        entries = await self.session.scalar(
            select(TaskPollLog.entries).where(TaskPollLog.task_id == task_id)
        )
        return list(entries or [])

    async def list_page(
        self,
        tenant: str | None,
        *,
        limit: int,
        filters: TaskFilters = NO_FILTERS,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Task]:
        """Newest first, keyset on (created_at, id); `tenant` None: every tenant's (an
        operator).

        One tenant's page walks ix_tasks_tenant_created from `after`, every tenant's
        ix_tasks_created (a time range bounds either walk). An external id is a lookup in
        uq_tasks_tenant_provider_external_id, its provider spelled out as the configured list
        when the filter names none, so that the index serves it without a skip scan; across
        tenants, each tenant's lookup is merged, the tenants found by a loose walk over
        ix_tasks_tenant_created's first column (one probe per tenant)."""
        conditions = _conditions(filters, after)
        order = (Task.created_at.desc(), Task.id.desc())
        if tenant is not None or filters.external_id is None:
            stmt = select(Task).where(of_tenant(Task.tenant, tenant), *conditions)
            return list(await self.session.scalars(stmt.order_by(*order).limit(limit)))
        tenants = (
            select(literal_column("t.tenant").label("tenant"))
            .select_from(text(_TENANTS))
            .where(literal_column("t.tenant").is_not(None))
            .subquery("tenants")
        )
        page = (
            select(Task)
            .where(Task.tenant == tenants.c.tenant, *conditions)
            .order_by(*order)
            .limit(limit)
            .lateral("page")
        )
        shown = aliased(Task, page)
        stmt = (
            select(shown)
            .select_from(tenants)
            .join(page, true())
            .order_by(shown.created_at.desc(), shown.id.desc())
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def events_of(self, tenant: str, task_id: uuid.UUID, *, limit: int) -> list[Event]:
        """A task's first `limit` events, oldest first: uq_events_task_id_sequence."""
        stmt = (
            select(Event)
            .where(Event.task_id == task_id, Event.tenant == tenant)
            .order_by(Event.sequence)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

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
