from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import ProviderSettings
from app.models import ProviderState


class ProviderStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure_rows(self, providers: Mapping[str, ProviderSettings]) -> None:
        """One shared state row per configured instance; existing rows keep their state."""
        if not providers:
            return
        stmt = insert(ProviderState).values(
            [{"name": name, "kind": p.kind.value} for name, p in providers.items()]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"kind": stmt.excluded.kind}
        )
        await self.session.execute(stmt)
