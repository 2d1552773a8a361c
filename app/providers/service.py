from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import ProviderSettings, Settings
from app.models import ProviderHealth
from app.polling import policy
from app.polling.repository import CompletionRepository
from app.providers.repository import InstanceState, ProviderStateRepository
from app.providers.schemas import CompletionTimes, ProviderList, ProviderRead, Saturation


class ProviderService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.repo = ProviderStateRepository(session)
        self.completions = CompletionRepository(session)
        self.settings = settings

    async def list(self) -> ProviderList:
        states = await self.repo.states(
            self.settings.providers, recovery_s=self.settings.engine.rate_recovery_s
        )
        backlog = await self.repo.due_backlog()
        learned = {
            row.provider: model
            for row in await self.completions.profiles()
            if row.size_class == policy.ALL_SIZES
            and (model := policy.CompletionModel.learned(row.quantiles, row.samples))
        }
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
                    schedule=provider.schedule,
                    completion=_completion(learned.get(name)),
                    saturation=_saturation(state, provider),
                    health=state.health if state else ProviderHealth.OK,
                    paused_until=paused,
                    last_error=state.last_error if state else None,
                    last_error_at=state.last_error_at if state else None,
                )
            )
        return ProviderList(items=items)


def _completion(model: policy.CompletionModel | None) -> CompletionTimes | None:
    if model is None:
        return None
    return CompletionTimes(
        samples=model.samples,
        p50_s=round(model.quantile(0.5), 3),
        p90_s=round(model.quantile(0.9), 3),
    )


def _saturation(state: InstanceState | None, provider: ProviderSettings) -> Saturation | None:
    if state is None or state.poll_demand_per_s is None:
        return None
    capacity = state.poll_capacity_per_s or 0.0
    return Saturation(
        poll_demand_per_s=round(state.poll_demand_per_s, 3),
        poll_capacity_per_s=round(capacity, 3),
        ratio=round(state.poll_demand_per_s / capacity, 3) if capacity > 0 else 0.0,
        saturated_since=state.saturated_since,
        hit_chance=round(policy.effective_hit_chance(provider, state.poll_hit_chance), 3),
        active_tasks=state.active_tasks or 0,
        expected_detection_delay_s=(
            round(state.expected_detection_delay_s, 3)
            if state.expected_detection_delay_s is not None
            else None
        ),
    )
