from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.core.db import ping
from app.core.errors import ServiceUnavailable
from app.core.schemas import error_responses
from app.deps import StateDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="The database is reachable", responses=error_responses(503))
async def readyz(state: StateDep) -> Health:
    try:
        await ping(state.engine)
    except Exception as exc:
        raise ServiceUnavailable(
            "database unreachable", details={"reason": type(exc).__name__}
        ) from None
    return Health(status="ready")
