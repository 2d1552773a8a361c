from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import ProviderSettings, Settings
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.netguard import SsrfGuard, check_destination
from app.core.pagination import decode_cursor, encode_cursor
from app.models import Task, TaskStatus
from app.providers.external_ids import InvalidExternalId, normalize_external_id
from app.schedule import plans
from app.schedule.forecasts import Forecasts
from app.tasks.repository import TaskRepository
from app.tasks.schemas import TaskCreate, TaskList, TaskRead
from app.tasks.transitions import can_transition, event_type
from app.webhooks import outbox
from app.webhooks.events import EventType, NewEvent, TaskSnapshot


@dataclass(frozen=True)
class Registration:
    task: Task
    created: bool


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
    ) -> None:
        self.session = session
        self.repo = TaskRepository(session)
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
        provider = self._provider(body.provider)
        try:
            external_id = normalize_external_id(provider.kind, body.external_id)
        except InvalidExternalId as exc:
            raise ValidationFailed.field("external_id", str(exc)) from None
        if body.callback_url is not None:
            await check_destination(self.guard, body.callback_url, "callback_url")
        metadata = body.metadata or {}
        if len(json.dumps(metadata, separators=(",", ":"))) > self.settings.max_metadata_bytes:
            raise ValidationFailed.field(
                "metadata", f"must be at most {self.settings.max_metadata_bytes} bytes as JSON"
            )

        deadline_s = body.deadline_s or provider.deadline_s
        await self.forecasts.reload_if_stale(self.session)
        model = self.forecasts.model_for(body.provider, body.size_hint)
        hit_chance = self.forecasts.hit_chance_for(body.provider)
        first = plans.plan_first(provider, model, hit_chance)
        ready = plans.estimated_ready_age(model, 0.0)
        # Timestamps come from the database clock inside the INSERT (one clock for every
        # replica, no extra round trip); a trigger wakes the engines (migration 0610).
        task = await self.repo.insert_if_absent(
            {
                "id": uuid.uuid4(),
                "tenant": tenant,
                "provider": body.provider,
                "external_id": external_id,
                "status": TaskStatus.PENDING.value,
                "metadata_": metadata,
                "callback_url": body.callback_url,
                "deadline_s": body.deadline_s,
                "size_hint": body.size_hint,
                "next_poll_at": func.now() + timedelta(seconds=first),
                "poll_interval_s": first,
                "estimated_ready_at": (
                    func.now() + timedelta(seconds=ready) if ready is not None else None
                ),
                "deadline_at": func.now() + timedelta(seconds=deadline_s),
            }
        )
        if task is not None:
            return Registration(task=task, created=True)

        existing = await self.repo.get_by_external_id(tenant, body.provider, external_id)
        if existing is None:  # deleted between the conflict and the read; vanishingly rare
            raise Conflict("the task changed concurrently; retry the request")
        differing = [
            name
            for name, given, stored in (
                ("callback_url", body.callback_url, existing.callback_url),
                ("metadata", metadata, existing.metadata_ or {}),
                ("deadline_s", body.deadline_s, existing.deadline_s),
                ("size_hint", body.size_hint, existing.size_hint),
            )
            if given != stored
        ]
        if differing:
            raise Conflict(
                "this task is already registered with different " + ", ".join(differing),
                details={"task_id": str(existing.id), "fields": differing},
            )
        return Registration(task=existing, created=False)

    async def get(self, tenant: str, task_id: uuid.UUID) -> Task:
        task = await self.repo.get(tenant, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def list(
        self,
        tenant: str,
        *,
        limit: int,
        provider: str | None,
        status: TaskStatus | None,
        cursor: str | None,
    ) -> TaskList:
        if provider is not None:
            self._provider(provider)
        after = decode_cursor(cursor) if cursor else None
        rows = await self.repo.list_page(
            tenant,
            limit=limit + 1,
            provider=provider,
            status=status.value if status else None,
            after=after,
        )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return TaskList(items=[TaskRead.from_task(t) for t in page], next_cursor=next_cursor)

    async def cancel(self, tenant: str, task_id: uuid.UUID) -> Cancellation:
        """Stop tracking. Idempotent for an already cancelled task; 409 for other terminals."""
        task = await self.repo.get(tenant, task_id, for_update=True)
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
    return NewEvent(
        id=uuid.uuid4(),
        task_id=task.id,
        tenant=task.tenant,
        type=EventType(event_type(new)),
        sequence=task.sequence,
        payload=TaskSnapshot.from_task(task).model_dump(mode="json"),
        callback_url=task.callback_url,
    )


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
