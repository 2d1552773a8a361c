"""The outbox: the deliveries of events, written in the transaction of their status changes
(`app/tasks/service.py` write_events), so they commit with them or not at all. The delivery
loop (`app/webhooks/delivery.py`) sends them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.events import DEFAULT_EVENT_TYPES, NewEvent
from app.webhooks.repository import OutboxEntry, WebhookRepository


async def enqueue(session: AsyncSession, events: Sequence[NewEvent]) -> int:
    """The outbox step of status changes: the deliveries of all their events, in one
    statement, same transaction."""
    if not events:
        return 0
    return await WebhookRepository(session).fan_out(
        [
            OutboxEntry(
                event_id=event.id,
                task_id=event.task_id,
                tenant=event.tenant,
                type=event.type.value,
                terminal=event.type in DEFAULT_EVENT_TYPES,
                hold_s=event.hold_s,
                callback_url=event.callback_url,
            )
            for event in events
        ]
    )


async def release_held(session: AsyncSession, event_id: uuid.UUID) -> bool:
    """Send a held event now (the archive it waited for is done or given up), unless it
    has gone out already: whether it had not (WebhookRepository.release_held)."""
    return await WebhookRepository(session).release_held(event_id)
