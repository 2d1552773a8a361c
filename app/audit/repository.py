from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEntry


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        tenant: str | None,
        result: str,
        details: dict[str, Any],
    ) -> None:
        self.session.add(
            AuditEntry(
                actor=actor,
                role=role,
                action=action,
                target=target,
                tenant=tenant,
                result=result,
                details=details,
            )
        )
        await self.session.flush()

    async def page(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[AuditEntry]:
        """Newest first; keyset on (at, id), served by ix_audit_log_at (ix_audit_log_tenant_at
        for one tenant's)."""
        stmt = select(AuditEntry)
        if tenant is not None:
            stmt = stmt.where(AuditEntry.tenant == tenant)
        if actor is not None:
            stmt = stmt.where(AuditEntry.actor == actor)
        if action is not None:
            stmt = stmt.where(AuditEntry.action == action)
        if after is not None:
            stmt = stmt.where(tuple_(AuditEntry.at, AuditEntry.id) < tuple_(*after))
        stmt = stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))
