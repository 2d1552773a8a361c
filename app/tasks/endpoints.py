from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.core.metrics import TASK_OUTCOMES
from app.core.schemas import error_responses
from app.deps import SessionDep, SettingsDep, StateDep, TenantDep
from app.models import TaskStatus
from app.tasks.schemas import TaskCreate, TaskList, TaskRead
from app.tasks.service import TaskService
from app.webhooks.endpoints import WebhookServiceDep
from app.webhooks.schemas import DeliveryList


async def get_task_service(
    session: SessionDep, settings: SettingsDep, state: StateDep
) -> TaskService:
    return TaskService(session, settings, state.guard, state.forecasts)


TaskServiceDep = Annotated[TaskService, Depends(get_task_service)]

# Tags per route: the deliveries of a task are documented with the webhooks.
router = APIRouter(prefix="/tasks")


@router.post(
    "",
    tags=["tasks"],
    status_code=status.HTTP_201_CREATED,
    summary="Register an upstream task for tracking",
    responses={
        200: {"model": TaskRead, "description": "Already registered: the existing task"},
        **error_responses(401, 408, 409, 413, 415, 422, 503),
    },
)
async def register_task(
    body: TaskCreate, response: Response, tenant: TenantDep, service: TaskServiceDep
) -> TaskRead:
    registration = await service.register(tenant, body)
    if not registration.created:
        response.status_code = status.HTTP_200_OK
    return TaskRead.from_task(registration.task)


@router.get(
    "",
    tags=["tasks"],
    summary="List tasks, newest first",
    responses=error_responses(401, 422, 503),
)
async def list_tasks(
    tenant: TenantDep,
    service: TaskServiceDep,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TaskList:
    return await service.list(tenant, limit=limit, provider=provider, status=status, cursor=cursor)


@router.get(
    "/{task_id}",
    summary="Get a task",
    tags=["tasks"],
    responses=error_responses(401, 404, 422, 503),
)
async def get_task(task_id: uuid.UUID, tenant: TenantDep, service: TaskServiceDep) -> TaskRead:
    return TaskRead.from_task(await service.get(tenant, task_id))


@router.delete(
    "/{task_id}",
    tags=["tasks"],
    summary="Stop tracking a task (status cancelled)",
    responses=error_responses(401, 404, 409, 422, 503),
)
async def cancel_task(task_id: uuid.UUID, tenant: TenantDep, service: TaskServiceDep) -> TaskRead:
    cancellation = await service.cancel(tenant, task_id)
    if cancellation.changed:
        TASK_OUTCOMES.labels(cancellation.task.provider, TaskStatus.CANCELLED.value).inc()
    return TaskRead.from_task(cancellation.task)


@router.get(
    "/{task_id}/deliveries",
    tags=["webhooks"],
    summary="The webhook deliveries of a task, with every attempt",
    responses=error_responses(401, 404, 422, 503),
)
async def task_deliveries(
    task_id: uuid.UUID,
    tenant: TenantDep,
    tasks: TaskServiceDep,
    service: WebhookServiceDep,
) -> DeliveryList:
    task = await tasks.get(tenant, task_id)
    return await service.deliveries_of(tenant, task)
