"""Mounts every domain router."""

from __future__ import annotations

from fastapi import APIRouter

from app.audit.endpoints import router as audit_router
from app.core.schemas import error_responses
from app.health.endpoints import router as health_router
from app.inbound.endpoints import router as inbound_router
from app.overview.endpoints import router as overview_router
from app.providers.endpoints import router as providers_router
from app.tasks.endpoints import router as tasks_router
from app.webhooks.endpoints import router as webhooks_router

# Every /v1 route authenticates a caller, and the per-caller rate limit applies there.
v1_router = APIRouter(prefix="/v1", responses=error_responses(429))
v1_router.include_router(tasks_router)
v1_router.include_router(providers_router)
v1_router.include_router(webhooks_router)
v1_router.include_router(audit_router)
v1_router.include_router(overview_router)
v1_router.include_router(inbound_router)

root_router = APIRouter()
root_router.include_router(health_router)
root_router.include_router(v1_router)
