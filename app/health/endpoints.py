from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app.core import metrics
from app.core.db import ping
from app.core.errors import ServiceUnavailable
from app.core.schemas import error_responses
from app.deps import StateDep
from app.health.service import refresh_shared_state

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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def prometheus_metrics(state: StateDep) -> Response:
    await refresh_shared_state(state.sessions, state.settings)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
