"""The audit log: every change asked of pollhook through its API or dashboard, with who asked,
on what, and whether it was made.

A change is named once, where it enters (`Change`: the caller and a dotted action); the
service that makes it records it with `AuditLog.record` in the same transaction, so a change
that rolls back leaves no entry and an entry always means the change happened. A key that may
not change anything (a read-only operator's) is refused by `permit`, which records the refusal
in a transaction of its own: the request's own rolls back with the refusal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.repository import AuditRepository
from app.audit.schemas import AuditList, AuditRead
from app.auth.service import Caller
from app.core.errors import Forbidden
from app.core.pagination import decode_cursor, encode_cursor


@dataclass(frozen=True)
class Change:
    """A change a caller may make: who, and what (e.g. `delivery.retry`)."""

    caller: Caller
    action: str


async def permit(
    sessions: async_sessionmaker[AsyncSession], caller: Caller, action: str, target: str
) -> Change:
    """The change `action` by `caller`, or Forbidden (recorded as denied) for a read-only key."""
    change = Change(caller, action)
    if not caller.may_change:
        async with sessions() as session, session.begin():
            await AuditLog(session).record(change, target=target, tenant=None, result="denied")
        raise Forbidden("this key is read-only: it sees everything and changes nothing")
    return change


class AuditLog:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = AuditRepository(session)

    async def record(
        self,
        change: Change,
        *,
        target: str,
        tenant: str | None,
        details: dict[str, Any] | None = None,
        result: str = "ok",
    ) -> None:
        await self.repo.add(
            actor=change.caller.actor,
            role=change.caller.role.value,
            action=change.action,
            target=target,
            tenant=tenant,
            result=result,
            details=details or {},
        )

    async def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        tenant: str | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> AuditList:
        after: tuple[datetime, uuid.UUID] | None = decode_cursor(cursor) if cursor else None
        rows = await self.repo.page(
            limit=limit + 1, tenant=tenant, actor=actor, action=action, after=after
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [AuditRead.model_validate(row, from_attributes=True) for row in rows]
        last = rows[-1] if more and rows else None
        return AuditList(items=items, next_cursor=encode_cursor(last.at, last.id) if last else None)
