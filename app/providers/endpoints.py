from __future__ import annotations

from fastapi import APIRouter

from app.core.schemas import error_responses
from app.deps import SessionDep, SettingsDep, TenantDep
from app.providers.schemas import ProviderList
from app.providers.service import ProviderService

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get(
    "",
    summary="Provider instances: rate budget, backlog and health",
    responses=error_responses(401, 503),
)
async def list_providers(_: TenantDep, session: SessionDep, settings: SettingsDep) -> ProviderList:
    return await ProviderService(session, settings).list()
