from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditLog, Change
from app.blobs.views import ArchiveLinks
from app.core.config import ProviderSettings, Settings
from app.core.errors import Conflict, NotFound, ServiceError, ValidationFailed
from app.core.logging import get_logger
from app.core.netguard import SsrfGuard, check_destination
from app.core.pagination import decode_cursor, encode_cursor
from app.models import Event, Task, TaskStatus, TaskView
from app.providers.external_ids import InvalidExternalId
from app.providers.registry import normalize_external_id
from app.schedule import plans
from app.schedule.forecasts import Forecasts
from app.tasks.repository import NewTaskRow, TaskFilters, TaskKey, TaskRepository
from app.tasks.schemas import PollList, PollRead, TaskCreate, TaskList, TaskRead
from app.tasks.transitions import can_transition, event_type
from app.webhooks import outbox
from app.webhooks.events import (
    EventType,
    NewEvent,
    TaskSnapshot,
    TaskSnapshotFields,
    snapshot_fields,
)

# A task has a handful of events (one per status change, and its archive's); a bound all
# the same, for a page that shows them.
MAX_EVENTS_SHOWN = 200

# Callback URLs of one batch checked by the SSRF guard at once (each may wait on DNS).
CALLBACK_CHECKS_AT_ONCE = 32

logger = get_logger(__name__)


@dataclass(frozen=True)
class Registration:
    task: TaskView
    created: bool


def _registration(row: NewTaskRow, task: TaskView, created: bool) -> Registration:
    """The outcome of registering `row` when `task` holds its key: 409 when an earlier
    registration of the key had other parameters."""
    if created:
        return Registration(task=task, created=True)
    differing = [
        name
        for name, given, stored in (
            ("callback_url", row.callback_url, task.callback_url),
            ("metadata", row.metadata, task.metadata_ or {}),
            ("deadline_s", row.deadline_s, task.deadline_s),
            ("size_hint", row.size_hint, task.size_hint),
        )
        if given != stored
    ]
    if differing:
        raise Conflict(
            "this task is already registered with different " + ", ".join(differing),
            details={"task_id": str(task.id), "fields": differing},
        )
    return Registration(task=task, created=False)


def _batch_outcome(
    row: NewTaskRow | ValidationFailed,
    found: dict[TaskKey, tuple[TaskView, bool]],
    firsts: dict[TaskKey, NewTaskRow],
) -> Registration | ServiceError:
    if isinstance(row, ValidationFailed):
        return row
    task, created = found[row.key]
    try:
        # Only the first item of a key is the one its statement created.
        return _registration(row, task, created and firsts[row.key] is row)
    except Conflict as exc:
        return exc


@dataclass(frozen=True)
class Cancellation:
    task: Task
    changed: bool


class TaskService:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        guard: SsrfGuard,
        forecasts: Forecasts,
        links: ArchiveLinks,
    ) -> None:
        self.links = links
        self.session = session
        self.repo = TaskRepository(session)
        self.audit = AuditLog(session)
        self.settings = settings
        self.guard = guard
        self.forecasts = forecasts

    def _provider(self, name: str) -> ProviderSettings:
        provider = self.settings.providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self.settings.providers))
            raise ValidationFailed.field("provider", f"unknown provider {name!r} (known: {known})")
        return provider

    async def register(self, tenant: str, body: TaskCreate) -> Registration:
        await self.forecasts.reload_if_stale(self.session)
        row = await self._validate(body, {})
        found = await self._insert_or_get(tenant, [row])
        return _registration(row, *found[row.key])

    async def register_batch(
        self, tenant: str, bodies: Sequence[TaskCreate]
    ) -> list[Registration | ServiceError]:
        """Each item's outcome, in order: validated one by one, written with one statement.

        Idempotent per item as `register` is. Within the batch, the first item of a key is
        the one written; a later item of the same key finds it (existing, or a conflict when
        its parameters differ), exactly as if it had been sent after the first.
        """
        await self.forecasts.reload_if_stale(self.session)
        checked = await self._refusals({b.callback_url for b in bodies if b.callback_url})
        rows: list[NewTaskRow | ValidationFailed] = []
        for body in bodies:
            try:
                rows.append(await self._validate(body, checked))
            except ValidationFailed as exc:
                rows.append(exc)
        firsts: dict[TaskKey, NewTaskRow] = {}
        for row in rows:
            if isinstance(row, NewTaskRow):
                firsts.setdefault(row.key, row)
        found = await self._insert_or_get(tenant, [firsts[key] for key in sorted(firsts)])
        return [_batch_outcome(row, found, firsts) for row in rows]

    async def _validate(
        self, body: TaskCreate, checked: dict[str, ValidationFailed | None]
    ) -> NewTaskRow:
        """The registration as it will be stored, its first poll planned from the learned
        forecast, or ValidationFailed naming the field. `checked` remembers the SSRF guard's
        word on each callback_url already seen in this request: a batch usually repeats one."""
        provider = self._provider(body.provider)
        try:
            external_id = normalize_external_id(provider.kind, body.external_id)
        except InvalidExternalId as exc:
            raise ValidationFailed.field("external_id", str(exc)) from None
        if body.callback_url is not None:
            if body.callback_url not in checked:
                checked[body.callback_url] = await self._refusal(body.callback_url)
            refusal = checked[body.callback_url]
            if refusal is not None:
                raise ValidationFailed(refusal.message, refusal.details)
        metadata = body.metadata or {}
        metadata_json = json.dumps(metadata, separators=(",", ":"))
        if len(metadata_json) > self.settings.max_metadata_bytes:
            raise ValidationFailed.field(
                "metadata", f"must be at most {self.settings.max_metadata_bytes} bytes as JSON"
            )
        model = self.forecasts.model_for(body.provider, body.size_hint)
        hit_chance = self.forecasts.hit_chance_for(body.provider)
        return NewTaskRow(
            provider=body.provider,
            external_id=external_id,
            metadata=metadata,
            metadata_json=metadata_json,
            callback_url=body.callback_url,
            deadline_s=body.deadline_s,
            size_hint=body.size_hint,
            first_poll_s=plans.plan_first(provider, model, hit_chance),
            ready_s=plans.estimated_ready_age(model, 0.0),
            deadline_after_s=body.deadline_s or provider.deadline_s,
        )

    async def _refusals(self, urls: set[str]) -> dict[str, ValidationFailed | None]:
        """The SSRF guard's word on each distinct callback_url of a batch. The guard may wait
        on name resolution for each host: the session gives its connection back first (the
        statement session takes one again for the write), and the hosts are resolved side
        by side, at most CALLBACK_CHECKS_AT_ONCE at a time, so a batch of slow hosts
        neither holds a pooled connection nor takes minutes."""
        if not urls:
            return {}
        await self.session.close()
        limit = asyncio.Semaphore(CALLBACK_CHECKS_AT_ONCE)

        async def one(url: str) -> tuple[str, ValidationFailed | None]:
            async with limit:
                return url, await self._refusal(url)

        return dict(await asyncio.gather(*(one(url) for url in sorted(urls))))

    async def _refusal(self, url: str) -> ValidationFailed | None:
        try:
            await check_destination(self.guard, url, "callback_url")
        except ValidationFailed as exc:
            return exc
        return None

    async def _insert_or_get(
        self, tenant: str, rows: list[NewTaskRow]
    ) -> dict[TaskKey, tuple[TaskView, bool]]:
        """Every row's task, and whether it was created: one statement, and a second read
        only for the keys a concurrent registration inserted while the first ran."""
        found = await self.repo.insert_or_get(tenant, rows)
        missing = [row.key for row in rows if row.key not in found]
        if missing:
            again = await self.repo.get_by_keys(tenant, missing)
            found.update((key, (task, False)) for key, task in again.items())
        for key in missing:
            if key not in found:  # deleted between the conflict and the read; vanishingly rare
                raise Conflict("the task changed concurrently; retry the request")
        return found

    async def shown_fields(self, task: TaskView) -> TaskSnapshotFields:
        """The task as the API shows it, as `snapshot_fields`: the archived files in
        `result.archive`, with links minted now."""
        fields = snapshot_fields(task)
        result = fields["result"]
        if task.archive is None or result is None:
            return fields
        files = await self.links.files(task.archive, datetime.now(UTC))
        if files is not None:
            fields["result"] = result.model_copy(update={"archive": files})
        return fields

    async def shown(self, task: TaskView) -> TaskRead:
        """The task as the API shows it (`shown_fields`), as its model."""
        return TaskRead(**await self.shown_fields(task))

    async def get(self, tenant: str | None, task_id: uuid.UUID) -> Task:
        """The task, within one tenant's, or any tenant's for None (an operator)."""
        task = await self.repo.get(tenant, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def polls(self, task: Task) -> PollList:
        """The last polls of a task the caller could already see; an entry this version
        cannot read (a newer shape) is left out rather than failing the list."""
        items = []
        for entry in await self.repo.poll_log(task.id):
            try:
                items.append(PollRead.model_validate(entry))
            except ValidationError:
                logger.warning("task.poll_log_unreadable", task_id=str(task.id))
        return PollList(items=items)

    async def events_of(self, task: Task, *, limit: int = MAX_EVENTS_SHOWN) -> list[Event]:
        """The events of a task the caller has (from `get`), oldest first."""
        return await self.repo.events_of(task.tenant, task.id, limit=limit)

    async def list(
        self,
        tenant: str | None,
        *,
        limit: int,
        provider: str | None,
        status: TaskStatus | None,
        cursor: str | None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        external_id: str | None = None,
    ) -> TaskList:
        """A page of tasks, newest first; `tenant` None: every tenant's (operators)."""
        if provider is not None:
            self._provider(provider)
        after = decode_cursor(cursor) if cursor else None
        filters = TaskFilters(
            provider=provider,
            status=status.value if status else None,
            created_from=created_from,
            created_before=created_before,
            external_id=external_id,
            providers=tuple(sorted(self.settings.providers)),
        )
        rows = await self.repo.list_page(tenant, limit=limit + 1, filters=filters, after=after)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return TaskList(items=[await self.shown(t) for t in page], next_cursor=next_cursor)

    async def cancel(self, change: Change, task_id: uuid.UUID) -> Cancellation:
        """Stop tracking. Idempotent for an already cancelled task; 409 for other terminals."""
        task = await self.repo.get(change.caller.tenant, task_id, for_update=True)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        current = TaskStatus(task.status)
        if current is TaskStatus.CANCELLED:
            return Cancellation(task, changed=False)
        if not can_transition(current, TaskStatus.CANCELLED):
            raise Conflict(
                f"task {task_id} is already {current.value}",
                details={"status": current.value},
            )
        # Bumping the token voids any lease a poller holds: its outcome write will not match.
        task.fencing_token += 1
        await change_status(self.repo, task, TaskStatus.CANCELLED, await self.repo.now())
        await self.audit.record(
            change, target=f"task:{task.id}", tenant=task.tenant, details={"was": current.value}
        )
        return Cancellation(task, changed=True)


def transition(
    task: Task,
    new: TaskStatus,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> NewEvent:
    """Move `task` to `new` in memory, bump its sequence, and return the event announcing
    it, with the task as it now stands; `write_events` writes it in the transaction that
    writes the task.

    The caller holds the row lock; the (task_id, sequence) unique key makes a second event
    for the same change impossible even if two writers got this far.
    """
    if not can_transition(TaskStatus(task.status), new):
        raise ValueError(f"illegal transition {task.status} -> {new.value}")
    task.status = new.value
    task.sequence += 1
    task.updated_at = now
    if result is not None:
        task.result = result
    if error is not None:
        task.error = error
    if new.is_terminal:
        task.completed_at = now
        task.next_poll_at = None
        task.estimated_ready_at = None
        task.lease_owner = None
        task.lease_expires_at = None
        task.checkpoint = None
        task.poll_error = None
    return _event(task, EventType(event_type(new)))


def _event(task: Task, type_: EventType) -> NewEvent:
    return NewEvent(
        id=uuid.uuid4(),
        task_id=task.id,
        tenant=task.tenant,
        type=type_,
        sequence=task.sequence,
        payload=TaskSnapshot.from_task(task).model_dump(mode="json"),
        callback_url=task.callback_url,
    )


async def show_archive(
    session: AsyncSession, tenant: str, task_id: uuid.UUID, archive: dict[str, Any], now: datetime
) -> None:
    """The task's archive is complete after its terminal event went out: record it, and
    announce it with `task.archived`. Not a status change, but the sequence moves on, so a
    consumer that drops events not above the last sequence it saw keeps this one."""
    repo = TaskRepository(session)
    task = await repo.get(tenant, task_id, for_update=True)
    if task is None:
        return
    task.archive = archive
    task.sequence += 1
    task.updated_at = now
    event = _event(task, EventType.ARCHIVED)
    await repo.flush()
    await write_events(session, [event])


async def write_events(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    """The events of status changes and their outbox deliveries, one statement each: they
    commit with the changes, or not at all."""
    if events:
        await TaskRepository(session).add_events(events)
        await outbox.enqueue(session, events)


async def change_status(
    repo: TaskRepository,
    task: Task,
    new: TaskStatus,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Move one ORM-loaded `task` to `new` and write its event in the same transaction."""
    event = transition(task, new, now, result=result, error=error)
    await repo.flush()
    await write_events(repo.session, [event])
