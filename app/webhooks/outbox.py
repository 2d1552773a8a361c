"""The outbox: the deliveries of an event, written in the transaction of its status change
(`app/tasks/service.py` change_status), so they commit with it or not at all. The delivery
loop (`app/webhooks/delivery.py`) sends them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Event
from app.webhooks.events import TERMINAL_EVENT_TYPES, EventType
from app.webhooks.repository import WebhookRepository


async def enqueue(session: AsyncSession, event: Event, callback_url: str | None) -> int:
    """The outbox step of a status change: deliveries for its event, same transaction."""
    return await WebhookRepository(session).fan_out(
        event,
        terminal=EventType(event.type) in TERMINAL_EVENT_TYPES,
        callback_url=callback_url,
    )
