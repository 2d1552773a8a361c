from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, tenant: str, name: str | None, key_prefix: str, key_hash: str, role: str
    ) -> ApiKey:
        row = ApiKey(tenant=tenant, name=name, key_prefix=key_prefix, key_hash=key_hash, role=role)
        self.session.add(row)
        await self.session.flush()
        return row

    async def owner_for_hash(self, key_hash: str) -> tuple[str, str] | None:
        """(tenant or operator name, role) of the active key with this hash."""
        stmt = select(ApiKey.tenant, ApiKey.role).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
        )
        row = (await self.session.execute(stmt)).first()
        return (row.tenant, row.role) if row else None

    async def count_active(self) -> int:
        stmt = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        return int(await self.session.scalar(stmt) or 0)

    async def list(self, tenant: str | None = None) -> list[ApiKey]:
        stmt = select(ApiKey).order_by(ApiKey.created_at)
        if tenant is not None:
            stmt = stmt.where(ApiKey.tenant == tenant)
        return list(await self.session.scalars(stmt))

    async def revoke(self, key_prefix: str) -> int:
        rows = await self.session.scalars(
            select(ApiKey).where(ApiKey.key_prefix == key_prefix, ApiKey.revoked_at.is_(None))
        )
        count = 0
        for row in rows:
            row.revoked_at = func.now()
            count += 1
        await self.session.flush()
        return count
