from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from app.audit.service import Change
from app.core.errors import ServiceError
from app.core.metrics import TASK_OUTCOMES
from app.core.schemas import ErrorDetail, error_responses
from app.deps import (
    CallerDep,
    SessionDep,
    SettingsDep,
    StateDep,
    StatementCall,
    StatementCallerDep,
    StatementTenantDep,
    changes,
    charge,
)
from app.models import TaskStatus
from app.tasks.schemas import (
    PollList,
    TaskBatch,
    TaskBatchResult,
    TaskCreate,
    TaskList,
    TaskRead,
)
from app.tasks.service import Registration, TaskService
from app.webhooks.endpoints import WebhookServiceDep
from app.webhooks.schemas import DeliveryList


async def get_task_service(
    session: SessionDep, settings: SettingsDep, state: StateDep
) -> TaskService:
    return TaskService(session, settings, state.guard, state.forecasts, state.archive_links)


TaskServiceDep = Annotated[TaskService, Depends(get_task_service)]


def registration_service(call: StatementCall) -> TaskService:
    """Registration is one statement: on a statement session it costs one round trip."""
    state = call.state
    return TaskService(
        call.session, state.settings, state.guard, state.forecasts, state.archive_links
    )


# A batch counts against the tenant's API rate limit as one request per this many tasks
# (at least one, at most the burst): it costs the process about what that many single
# registrations do, in one statement instead of many.
BATCH_TASKS_PER_REQUEST = 10


# Tags per route: the deliveries of a task are documented with the webhooks.
router = APIRouter(prefix="/tasks")


def _json_response(content: object, status_code: int) -> Response:
    """`content` (plain values and models, shaped as the route's documented model) as JSON
    bytes: what the framework's validation of the returned model and its serialization
    would send, without building the models. The registration routes answer with up to a
    thousand tasks, and that building cost more CPU than the rest of the request."""
    return Response(to_json(content), status_code, media_type="application/json")


@router.post(
    "",
    tags=["tasks"],
    status_code=status.HTTP_201_CREATED,
    response_model=TaskRead,
    summary="Register an upstream task for tracking",
    responses={
        200: {"model": TaskRead, "description": "Already registered: the existing task"},
        **error_responses(401, 408, 409, 413, 415, 422, 503),
    },
)
async def register_task(body: TaskCreate, call: StatementTenantDep) -> Response:
    service = registration_service(call)
    registration = await service.register(call.tenant, body)
    return _json_response(
        await service.shown_fields(registration.task),
        status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK,
    )


@router.post(
    "/batch",
    tags=["tasks"],
    summary="Register up to 1,000 upstream tasks at once",
    description="Each task is registered as `POST /v1/tasks` would register it, and gets its "
    "own result, in the order given: `created`, `existing` (with the task) or `error` (with "
    "the error that `POST /v1/tasks` would answer for it: an unknown provider, a malformed "
    "`external_id`, a refused `callback_url`, too much `metadata`, or a `conflict` with an "
    "earlier registration). A task repeated within the batch is registered once, then "
    "`existing`. A body that does not match the schema (or holds no task, or more than "
    "1,000) is refused as a whole with 422. The batch counts as one request per "
    f"{BATCH_TASKS_PER_REQUEST} tasks against the tenant's API rate limit.",
    response_model=TaskBatchResult,
    responses=error_responses(401, 408, 413, 415, 422, 503),
)
async def register_tasks(body: TaskBatch, call: StatementCallerDep) -> Response:
    charge(call.state, call.actor, -(-len(body.tasks) // BATCH_TASKS_PER_REQUEST))
    service = registration_service(call)
    outcomes = await service.register_batch(call.tenant, body.tasks)
    return _json_response(
        {"results": [await _batch_item(service, outcome) for outcome in outcomes]},
        status.HTTP_200_OK,
    )


async def _batch_other_methods(_: Request) -> Response:
    # Without this route `GET /v1/tasks/batch` would reach `GET /v1/tasks/{task_id}` and be
    # refused as an invalid task id (422): it is the batch route, which takes POST only.
    raise StarletteHTTPException(status.HTTP_405_METHOD_NOT_ALLOWED)


# After the POST route and before /{task_id}: the other methods at this path.
router.add_route(
    router.prefix + "/batch",
    _batch_other_methods,
    methods=["GET", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)


async def _batch_item(service: TaskService, outcome: Registration | ServiceError) -> dict[str, Any]:
    """A `TaskBatchItem`'s fields, in its order."""
    if isinstance(outcome, ServiceError):
        error = ErrorDetail(code=outcome.code, message=outcome.message, details=outcome.details)
        return {"status": "error", "task": None, "error": error}
    return {
        "status": "created" if outcome.created else "existing",
        "task": await service.shown_fields(outcome.task),
        "error": None,
    }


@router.get(
    "",
    tags=["tasks"],
    summary="List tasks, newest first",
    responses=error_responses(401, 422, 503),
)
async def list_tasks(
    caller: CallerDep,
    service: TaskServiceDep,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    status: TaskStatus | None = None,
    tenant: Annotated[
        str | None,
        Query(max_length=64, description="Operators only: one tenant's tasks (default: all)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TaskList:
    scope = caller.tenant if caller.tenant is not None else tenant
    return await service.list(scope, limit=limit, provider=provider, status=status, cursor=cursor)


@router.get(
    "/{task_id}",
    summary="Get a task",
    tags=["tasks"],
    responses=error_responses(401, 404, 422, 503),
)
async def get_task(task_id: uuid.UUID, caller: CallerDep, service: TaskServiceDep) -> TaskRead:
    return await service.shown(await service.get(caller.tenant, task_id))


@router.delete(
    "/{task_id}",
    tags=["tasks"],
    summary="Stop tracking a task (status cancelled)",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def cancel_task(
    task_id: uuid.UUID,
    change: Annotated[Change, changes("task.cancel")],
    service: TaskServiceDep,
) -> TaskRead:
    cancellation = await service.cancel(change, task_id)
    if cancellation.changed:
        TASK_OUTCOMES.labels(cancellation.task.provider, TaskStatus.CANCELLED.value).inc()
    return await service.shown(cancellation.task)


@router.get(
    "/{task_id}/polls",
    tags=["tasks"],
    summary="The task's last polls: when, what the provider said, any error",
    responses=error_responses(401, 404, 422, 503),
)
async def task_polls(task_id: uuid.UUID, caller: CallerDep, service: TaskServiceDep) -> PollList:
    return await service.polls(await service.get(caller.tenant, task_id))


@router.get(
    "/{task_id}/deliveries",
    tags=["webhooks"],
    summary="The webhook deliveries of a task, with every attempt",
    responses=error_responses(401, 404, 422, 503),
)
async def task_deliveries(
    task_id: uuid.UUID,
    caller: CallerDep,
    tasks: TaskServiceDep,
    service: WebhookServiceDep,
) -> DeliveryList:
    return await service.deliveries_of(await tasks.get(caller.tenant, task_id))
