from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.core.schemas import error_responses
from app.deps import TaskServiceDep, TenantDep, WebhookServiceDep
from app.webhooks.schemas import (
    DeliveryList,
    DeliveryRead,
    SigningSecret,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)

router = APIRouter(tags=["webhooks"])


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
    responses=error_responses(401, 408, 413, 415, 422, 503),
)
async def create_webhook(
    body: WebhookCreate, tenant: TenantDep, service: WebhookServiceDep
) -> WebhookWithSecret:
    return await service.create(tenant, body)


@router.get("/webhooks", summary="List webhook endpoints", responses=error_responses(401, 503))
async def list_webhooks(tenant: TenantDep, service: WebhookServiceDep) -> WebhookList:
    return await service.list_endpoints(tenant)


@router.get(
    "/webhooks/{webhook_id}",
    summary="Get a webhook endpoint, with its secret",
    responses=error_responses(401, 404, 422, 503),
)
async def get_webhook(
    webhook_id: uuid.UUID, tenant: TenantDep, service: WebhookServiceDep
) -> WebhookWithSecret:
    return await service.get(tenant, webhook_id)


@router.patch(
    "/webhooks/{webhook_id}",
    summary="Change a webhook endpoint; re-enabling it redelivers what failed to it",
    responses=error_responses(401, 404, 408, 413, 415, 422, 503),
)
async def update_webhook(
    webhook_id: uuid.UUID, body: WebhookUpdate, tenant: TenantDep, service: WebhookServiceDep
) -> WebhookWithSecret:
    return await service.update(tenant, webhook_id, body)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook endpoint and its pending deliveries",
    responses=error_responses(401, 404, 422, 503),
)
async def delete_webhook(
    webhook_id: uuid.UUID, tenant: TenantDep, service: WebhookServiceDep
) -> Response:
    await service.delete(tenant, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    summary="Rotate the signing secret (the old one keeps signing for 24 h)",
    responses=error_responses(401, 404, 422, 503),
)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID, tenant: TenantDep, service: WebhookServiceDep
) -> WebhookWithSecret:
    return await service.rotate_secret(tenant, webhook_id)


@router.get(
    "/signing-secret",
    summary="The secret that signs this tenant's per-task callback_url deliveries",
    responses=error_responses(401, 503),
)
async def signing_secret(tenant: TenantDep, service: WebhookServiceDep) -> SigningSecret:
    return SigningSecret(secret=await service.signing_secret(tenant))


@router.get(
    "/tasks/{task_id}/deliveries",
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


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Deliver again now",
    responses=error_responses(401, 404, 422, 503),
)
async def retry_delivery(
    delivery_id: uuid.UUID, tenant: TenantDep, service: WebhookServiceDep
) -> DeliveryRead:
    return await service.retry(tenant, delivery_id)
