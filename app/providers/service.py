from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditLog, Change
from app.auth.service import Caller
from app.budget.capacity import poll_lease_s
from app.budget.repository import BudgetRepository, BudgetState
from app.core.config import ProviderSettings, Settings
from app.core.errors import Forbidden, NotFound
from app.models import ProviderHealth
from app.providers.base import CallbackSigning
from app.providers.registry import adapter_for
from app.providers.schemas import CompletionTimes, ProviderList, ProviderRead, Saturation
from app.schedule import plans
from app.schedule.model import ALL_SIZES, CompletionModel
from app.schedule.repository import CompletionRepository, ForecastRepository, StoredForecast


class ProviderService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.audit = AuditLog(session)
        self.budgets = BudgetRepository(session)
        self.forecasts = ForecastRepository(session)
        self.completions = CompletionRepository(session)
        self.settings = settings

    async def list(self, caller: Caller) -> ProviderList:
        """Every instance as `caller` may see it (ProviderRead: a tenant sees its own)."""
        providers = self.settings.providers
        states = await self.budgets.states(
            providers, recovery_s=self.settings.engine.rate_recovery_s
        )
        learned = {
            row.provider: model
            for row in await self.completions.profiles()
            if row.size_class == ALL_SIZES
            and (model := CompletionModel.learned(row.quantiles, row.samples))
        }
        tenant = caller.tenant
        own = await self.forecasts.active_of_tenant(tenant, providers) if tenant else {}
        internals = {} if tenant else await self._internals(states, caller.may_change)
        items = []
        for name, provider in sorted(providers.items()):
            state = states.get(name)
            paused = state.paused_until if state else None
            if state and paused and paused <= state.db_now:
                paused = None
            items.append(
                ProviderRead(
                    name=name,
                    kind=provider.kind,
                    health=state.health if state else ProviderHealth.OK,
                    paused_until=paused,
                    completion=_completion(learned.get(name)),
                    your_active_tasks=own.get(name, {}),
                    callbacks=provider.callbacks_on,
                    **internals.get(name, _HIDDEN),
                )
            )
        return ProviderList(items=items)

    async def completion_curves(self) -> dict[str, Sequence[float]]:
        """Per instance that has learned them: the completion ages (seconds) at percentiles
        0 to 100, the distribution `completion`'s p50 and p90 are read from."""
        return {
            row.provider: row.quantiles
            for row in await self.completions.profiles()
            if row.size_class == ALL_SIZES and CompletionModel.learned(row.quantiles, row.samples)
        }

    async def pause(self, change: Change, name: str, *, for_s: float) -> ProviderRead:
        """Stop polling the instance for `for_s` in every replica (an operator's change)."""
        provider = self._changeable(change, name)
        until = await self.budgets.pause(name, provider.kind.value, for_s=for_s)
        await self.audit.record(
            change,
            target=f"provider:{name}",
            tenant=None,
            details={"for_s": for_s, "paused_until": until.isoformat()},
        )
        return await self._one(change.caller, name)

    async def resume(self, change: Change, name: str) -> ProviderRead:
        """Poll the instance again now, whatever paused it (an operator's change)."""
        provider = self._changeable(change, name)
        await self.budgets.resume(name, held_s=poll_lease_s(self.settings.engine, provider))
        await self.audit.record(change, target=f"provider:{name}", tenant=None)
        return await self._one(change.caller, name)

    def _changeable(self, change: Change, name: str) -> ProviderSettings:
        """The instance `name`, if `change`'s caller may pause and resume it: an instance is
        every tenant's, so only an operator may."""
        if not change.caller.is_operator:
            raise Forbidden("pausing an instance is for operators: it stops every tenant's polls")
        provider = self.settings.providers.get(name)
        if provider is None:
            raise NotFound(f"no provider instance named {name!r}")
        return provider

    async def _one(self, caller: Caller, name: str) -> ProviderRead:
        [shown] = [item for item in (await self.list(caller)).items if item.name == name]
        return shown

    async def _internals(
        self, states: Mapping[str, BudgetState], reveal: bool
    ) -> dict[str, dict[str, Any]]:
        """What only operators see of each instance: address, budget, totals, last error;
        and, for an operator who may change things (`reveal`), the callback URL, which
        holds the instance's secret token."""
        backlog = await self.forecasts.due_backlog(self.settings.providers)
        stored = await self.forecasts.stored()
        shown: dict[str, dict[str, Any]] = {}
        for name, provider in self.settings.providers.items():
            state = states.get(name)
            shown[name] = {
                "base_url": provider.base_url,
                "configured_rate_per_s": provider.rate_limit_per_s,
                "effective_rate_per_s": round(
                    state.effective_rate_per_s if state else provider.rate_limit_per_s, 3
                ),
                "due_backlog": backlog.get(name, 0),
                "schedule": provider.schedule,
                "saturation": _saturation(stored.get(name), provider),
                "last_error": state.last_error if state else None,
                "last_error_at": state.last_error_at if state else None,
                "callback_url": inbound_url(self.settings, name) if reveal else None,
            }
        return shown


def inbound_url(settings: Settings, name: str) -> str | None:
    """The URL to hand the provider for its callbacks about this instance's tasks (served
    by app/inbound): with the secret token where the provider signs nothing; None while
    the instance takes no callbacks."""
    provider = settings.providers[name]
    if provider.callback_secret is None:
        return None
    url = f"{settings.resolved_public_url}/v1/inbound/{quote(name, safe='')}"
    if adapter_for(provider.kind).callbacks is CallbackSigning.TOKEN:
        url += "?" + urlencode({"token": provider.callback_secret.get_secret_value()})
    return url


# What only operators see of an instance (`_internals`), null for a tenant's key.
OPERATOR_FIELDS = (
    "base_url",
    "configured_rate_per_s",
    "effective_rate_per_s",
    "due_backlog",
    "schedule",
    "saturation",
    "last_error",
    "last_error_at",
    "callback_url",
)
_HIDDEN: dict[str, Any] = dict.fromkeys(OPERATOR_FIELDS)


def _completion(model: CompletionModel | None) -> CompletionTimes | None:
    if model is None:
        return None
    return CompletionTimes(
        samples=model.samples,
        p50_s=round(model.quantile(0.5), 3),
        p90_s=round(model.quantile(0.9), 3),
    )


def _saturation(forecast: StoredForecast | None, provider: ProviderSettings) -> Saturation | None:
    if forecast is None:
        return None
    capacity = forecast.capacity_per_s or 0.0
    return Saturation(
        poll_demand_per_s=round(forecast.demand_per_s, 3),
        poll_capacity_per_s=round(capacity, 3),
        ratio=round(forecast.demand_per_s / capacity, 3) if capacity > 0 else 0.0,
        saturated_since=forecast.saturated_since,
        hit_chance=round(plans.effective_hit_chance(provider, forecast.hit_chance), 3),
        active_tasks=forecast.active_tasks or 0,
        tasks_by_status=forecast.tasks_by_status,
        expected_detection_delay_s=(
            round(forecast.expected_detection_delay_s, 3)
            if forecast.expected_detection_delay_s is not None
            else None
        ),
    )
