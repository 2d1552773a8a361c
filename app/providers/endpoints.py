from __future__ import annotations

from fastapi import APIRouter

from app.core.schemas import error_responses
from app.deps import CallerDep, SessionDep, SettingsDep
from app.providers.schemas import ProviderList
from app.providers.service import ProviderService

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get(
    "",
    summary="Provider instances: health, and for operators rate budget and backlog",
    responses=error_responses(401, 503),
)
async def list_providers(
    caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> ProviderList:
    return await ProviderService(session, settings).list(caller)
