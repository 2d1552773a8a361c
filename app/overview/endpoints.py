from __future__ import annotations

from fastapi import APIRouter

from app.core.schemas import error_responses
from app.deps import CallerDep, SessionDep, SettingsDep
from app.overview.schemas import Overview
from app.overview.service import OverviewService

router = APIRouter(tags=["overview"])


@router.get(
    "/overview",
    summary="The deployment at a glance: tasks, activity, latencies, instances (operators only)",
    responses=error_responses(401, 403, 503),
)
async def get_overview(caller: CallerDep, session: SessionDep, settings: SettingsDep) -> Overview:
    return await OverviewService(session, settings).overview(caller)
