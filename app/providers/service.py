from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.models import ProviderHealth
from app.providers.repository import ProviderStateRepository
from app.providers.schemas import ProviderList, ProviderRead


class ProviderService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.repo = ProviderStateRepository(session)
        self.settings = settings

    async def list(self) -> ProviderList:
        states = await self.repo.states(
            self.settings.providers, recovery_s=self.settings.engine.rate_recovery_s
        )
        backlog = await self.repo.due_backlog()
        items = []
        for name, provider in sorted(self.settings.providers.items()):
            state = states.get(name)
            paused = state.paused_until if state else None
            if state and paused and paused <= state.db_now:
                paused = None
            items.append(
                ProviderRead(
                    name=name,
                    kind=provider.kind,
                    base_url=provider.base_url,
                    configured_rate_per_s=provider.rate_limit_per_s,
                    effective_rate_per_s=round(
                        state.effective_rate_per_s if state else provider.rate_limit_per_s, 3
                    ),
                    due_backlog=backlog.get(name, 0),
                    health=state.health if state else ProviderHealth.OK,
                    paused_until=paused,
                    last_error=state.last_error if state else None,
                    last_error_at=state.last_error_at if state else None,
                )
            )
        return ProviderList(items=items)
