from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from app.audit.service import Change
from app.core.schemas import error_responses
from app.deps import CallerDep, SessionDep, SettingsDep, StateDep, TenantDep, changes
from app.webhooks.events import EVENT_DESCRIPTIONS, EndpointTestEvent, EventType, WebhookEvent
from app.webhooks.schemas import (
    BulkRetry,
    BulkRetryResult,
    DeliveryPage,
    DeliveryQuery,
    DeliveryRead,
    DeliverySummary,
    RecentAttempts,
    SigningSecret,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookWithSecret,
)
from app.webhooks.service import WebhookService


async def get_webhook_service(
    session: SessionDep, settings: SettingsDep, state: StateDep
) -> WebhookService:
    return WebhookService(session, settings, state.guard)


WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]

router = APIRouter(tags=["webhooks"])


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
    responses=error_responses(401, 403, 408, 413, 415, 422, 503),
)
async def create_webhook(
    body: WebhookCreate,
    change: Annotated[Change, changes("webhook.create")],
    service: WebhookServiceDep,
) -> WebhookWithSecret:
    return await service.create(change, body)


@router.get("/webhooks", summary="List webhook endpoints", responses=error_responses(401, 503))
async def list_webhooks(caller: CallerDep, service: WebhookServiceDep) -> WebhookList:
    return await service.list_endpoints(caller.tenant)


@router.get(
    "/webhooks/{webhook_id}",
    summary="Get a webhook endpoint, with its secret",
    responses=error_responses(401, 404, 422, 503),
)
async def get_webhook(
    webhook_id: uuid.UUID, caller: CallerDep, service: WebhookServiceDep
) -> WebhookWithSecret:
    return await service.get(caller, webhook_id)


@router.patch(
    "/webhooks/{webhook_id}",
    summary="Change a webhook endpoint; re-enabling it redelivers what failed to it",
    responses=error_responses(401, 403, 404, 408, 413, 415, 422, 503),
)
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    change: Annotated[Change, changes("webhook.update")],
    service: WebhookServiceDep,
) -> WebhookWithSecret:
    return await service.update(change, webhook_id, body)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook endpoint and its pending deliveries",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def delete_webhook(
    webhook_id: uuid.UUID,
    change: Annotated[Change, changes("webhook.delete")],
    service: WebhookServiceDep,
) -> Response:
    await service.delete(change, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    summary="Rotate the signing secret (the old one keeps signing for 24 h)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID,
    change: Annotated[Change, changes("webhook.rotate_secret")],
    service: WebhookServiceDep,
) -> WebhookWithSecret:
    return await service.rotate_secret(change, webhook_id)


@router.post(
    "/webhooks/{webhook_id}/test",
    summary="Send a webhook.test event to this endpoint now",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def test_webhook(
    webhook_id: uuid.UUID,
    change: Annotated[Change, changes("webhook.test")],
    service: WebhookServiceDep,
) -> DeliveryRead:
    return await service.send_test(change, webhook_id)


@router.get(
    "/webhooks/{webhook_id}/attempts",
    summary="The endpoint's latest delivery attempts, newest first",
    responses=error_responses(401, 404, 422, 503),
)
async def webhook_attempts(
    webhook_id: uuid.UUID,
    caller: CallerDep,
    service: WebhookServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RecentAttempts:
    return await service.recent_attempts(caller, webhook_id, limit=limit)


@router.get(
    "/signing-secret",
    summary="The secret that signs this tenant's per-task callback_url deliveries",
    responses=error_responses(401, 403, 503),
)
async def signing_secret(tenant: TenantDep, service: WebhookServiceDep) -> SigningSecret:
    return SigningSecret(secret=await service.signing_secret(tenant))


@router.get(
    "/deliveries",
    summary="List deliveries, newest first (by default the failing and failed ones)",
    responses=error_responses(401, 422, 503),
)
async def list_deliveries(
    query: Annotated[DeliveryQuery, Query()], caller: CallerDep, service: WebhookServiceDep
) -> DeliveryPage:
    return await service.page(caller, query, limit=query.limit, cursor=query.cursor)


@router.get(
    "/deliveries/summary",
    summary="Failing and failed deliveries per endpoint",
    responses=error_responses(401, 422, 503),
)
async def delivery_summary(
    caller: CallerDep,
    service: WebhookServiceDep,
    tenant: Annotated[
        str | None,
        Query(max_length=64, description="Operators only: one tenant's (default: all)."),
    ] = None,
) -> DeliverySummary:
    return await service.summary(caller, tenant)


@router.post(
    "/deliveries/retry",
    summary="Retry every failing or failed delivery a filter matches (count, then confirm)",
    description="Two calls. Without `expected`, nothing changes: the answer's `matched` is how "
    "many deliveries the filter takes now (at most `limit`, the newest). Show it, ask, then "
    "call again with `expected` set to it (and `created_before` set to the answer's `as_of`, "
    "so that deliveries made since stay out): every match is due again now, in one statement, "
    "unless more match than `expected` (409: count again). A delivery in flight is counted "
    "but not queued twice.",
    responses=error_responses(401, 403, 409, 422, 503),
)
async def bulk_retry(
    body: BulkRetry,
    change: Annotated[Change, changes("delivery.bulk_retry")],
    service: WebhookServiceDep,
) -> BulkRetryResult:
    return await service.bulk_retry(change, body)


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Deliver again now",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def retry_delivery(
    delivery_id: uuid.UUID,
    change: Annotated[Change, changes("delivery.retry")],
    service: WebhookServiceDep,
) -> DeliveryRead:
    return await service.retry(change, delivery_id)


def describe_events(webhooks: APIRouter) -> None:
    """The OpenAPI document's `webhooks`: one entry per event type, the request a consumer's
    endpoint receives. pollhook serves none of these; it sends them."""
    for event_type, when in EVENT_DESCRIPTIONS.items():
        webhooks.add_api_route(
            event_type.value,
            _test_endpoint if event_type is EventType.TEST else _consumer_endpoint,
            methods=["POST"],
            summary=f"{event_type.value}: {when.split(';')[0].rstrip('.')}",
            description=f"{when}\n\n{_DELIVERY_RULES}",
            operation_id=f"webhook_{event_type.name.lower()}",
            response_class=Response,
            responses={
                200: {"description": "Delivered: any 2xx within the timeout (15 s)."},
                "410": {"description": "Gone: the endpoint is disabled, no more attempts."},
                "429": {"description": "Retried after Retry-After, and at least 60 s."},
            },
        )


_DELIVERY_RULES = (
    "Signed per Standard Webhooks: verify `webhook-signature` over "
    "`{webhook-id}.{webhook-timestamp}.{raw body}` with the endpoint's secret (or, for a "
    "task's `callback_url`, the tenant's signing secret) before parsing the body, and refuse a "
    "`webhook-timestamp` more than 5 minutes away. Any other answer, a redirect or a timeout "
    "is retried with the same `webhook-id` (see the README's Webhooks section)."
)


async def _consumer_endpoint(
    body: WebhookEvent,
    webhook_id: Annotated[
        str,
        Header(
            alias="webhook-id",
            description="The event's id: the same on every attempt and for every endpoint; "
            "deduplicate by it.",
        ),
    ],
    webhook_timestamp: Annotated[
        int, Header(alias="webhook-timestamp", description="Unix seconds, set per attempt.")
    ],
    webhook_signature: Annotated[
        str,
        Header(
            alias="webhook-signature",
            description="Space-separated `v1,<base64 HMAC-SHA256>` entries, one per valid "
            "secret (two while a rotated secret is in its grace period).",
        ),
    ],
) -> None:
    """Documentation only: FastAPI describes a webhook through a route's signature."""


async def _test_endpoint(
    body: EndpointTestEvent,
    webhook_id: Annotated[str, Header(alias="webhook-id", description="The test event's id.")],
    webhook_timestamp: Annotated[
        int, Header(alias="webhook-timestamp", description="Unix seconds, set per attempt.")
    ],
    webhook_signature: Annotated[
        str,
        Header(
            alias="webhook-signature",
            description="As for every event: one `v1,<base64 HMAC-SHA256>` per valid secret.",
        ),
    ],
) -> None:
    """Documentation only: the body of `webhook.test`."""
