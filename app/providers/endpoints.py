from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from app.audit.service import Change
from app.core.schemas import error_responses
from app.deps import CallerDep, SessionDep, SettingsDep, changes
from app.providers.schemas import PauseRequest, ProviderList, ProviderRead
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


@router.post(
    "/{name}/pause",
    summary="Stop polling an instance for a while, in every replica (operators only)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def pause_provider(
    name: str,
    change: Annotated[Change, changes("provider.pause")],
    session: SessionDep,
    settings: SettingsDep,
    body: PauseRequest | None = None,
) -> ProviderRead:
    for_s = (body or PauseRequest()).for_s
    return await ProviderService(session, settings).pause(change, name, for_s=for_s)


@router.post(
    "/{name}/resume",
    summary="Poll an instance again now, whatever paused it (operators only)",
    responses=error_responses(401, 403, 404, 503),
)
async def resume_provider(
    name: str,
    change: Annotated[Change, changes("provider.resume")],
    session: SessionDep,
    settings: SettingsDep,
) -> ProviderRead:
    return await ProviderService(session, settings).resume(change, name)
