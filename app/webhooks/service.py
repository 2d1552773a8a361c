from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import AuditLog, Change
from app.auth.service import Caller
from app.core.config import Settings
from app.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.core.netguard import SsrfGuard, check_destination
from app.core.pagination import decode_cursor, encode_cursor
from app.models import Delivery, DeliveryAttempt, Task, WebhookEndpoint
from app.webhooks import signing
from app.webhooks.events import EndpointTestData, EventType
from app.webhooks.repository import DeliveryMatch, WebhookRepository
from app.webhooks.schemas import (
    BULK_RETRY_LIMIT,
    RETRYABLE,
    AttemptRead,
    BulkRetry,
    BulkRetryResult,
    DeliveryFilter,
    DeliveryList,
    DeliveryPage,
    DeliveryRead,
    DeliveryStatus,
    DeliverySummary,
    EndpointSummary,
    RecentAttempt,
    RecentAttempts,
    WebhookCreate,
    WebhookList,
    WebhookRead,
    WebhookUpdate,
    WebhookWithSecret,
)

# The troubled deliveries the per-endpoint summary counts (the newest): the count stays
# bounded whatever a broken endpoint has piled up.
SUMMARY_LIMIT = 100_000


def _attempt_read(a: DeliveryAttempt) -> AttemptRead:
    return AttemptRead(
        attempt=a.attempt,
        attempted_at=a.attempted_at,
        duration_ms=a.duration_ms,
        status_code=a.status_code,
        response_body=a.response_body,
        error=a.error,
    )


def endpoint_read(endpoint: WebhookEndpoint) -> WebhookRead:
    return WebhookRead(
        id=endpoint.id,
        tenant=endpoint.tenant,
        url=endpoint.url,
        events=[EventType(e) for e in endpoint.events] if endpoint.events is not None else None,
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def endpoint_with_secret(endpoint: WebhookEndpoint, *, reveal: bool = True) -> WebhookWithSecret:
    """The endpoint with its secret, unless `reveal` is false (a read-only operator may see
    the endpoint, not sign as it)."""
    return WebhookWithSecret(
        **endpoint_read(endpoint).model_dump(),
        secret=endpoint.secret if reveal else None,
        previous_secret_expires_at=endpoint.previous_secret_expires_at
        if endpoint.previous_secret
        else None,
    )


class WebhookService:
    def __init__(self, session: AsyncSession, settings: Settings, guard: SsrfGuard) -> None:
        self.repo = WebhookRepository(session)
        self.audit = AuditLog(session)
        self.settings = settings
        self.guard = guard

    async def create(self, change: Change, body: WebhookCreate) -> WebhookWithSecret:
        tenant = change.caller.tenant
        if tenant is None:
            raise Forbidden("an endpoint belongs to a tenant: create it with the tenant's key")
        await check_destination(self.guard, body.url, "url")
        endpoint = await self.repo.add_endpoint(
            tenant=tenant,
            url=body.url,
            events=[e.value for e in body.events] if body.events else None,
            description=body.description,
            secret=signing.generate_secret(),
        )
        await self._audit(change, endpoint, {"url": body.url})
        return endpoint_with_secret(endpoint)

    async def list_endpoints(self, tenant: str | None) -> WebhookList:
        """One tenant's endpoints, or every tenant's for None (an operator)."""
        return WebhookList(items=[endpoint_read(e) for e in await self.repo.endpoints(tenant)])

    async def _get(
        self, tenant: str | None, endpoint_id: uuid.UUID, *, lock: bool = False
    ) -> WebhookEndpoint:
        endpoint = await self.repo.endpoint(tenant, endpoint_id, for_update=lock)
        if endpoint is None:
            raise NotFound(f"webhook endpoint {endpoint_id} not found")
        return endpoint

    async def get(self, caller: Caller, endpoint_id: uuid.UUID) -> WebhookWithSecret:
        endpoint = await self._get(caller.tenant, endpoint_id)
        return endpoint_with_secret(endpoint, reveal=caller.may_change)

    async def update(
        self, change: Change, endpoint_id: uuid.UUID, body: WebhookUpdate
    ) -> WebhookWithSecret:
        endpoint = await self._get(change.caller.tenant, endpoint_id, lock=True)
        given = body.model_fields_set
        if "url" in given:
            if body.url is None:
                raise ValidationFailed.field("url", "must not be null")
            await check_destination(self.guard, body.url, "url")
            endpoint.url = body.url
        if "events" in given:
            endpoint.events = [e.value for e in body.events] if body.events else None
        if "description" in given:
            endpoint.description = body.description
        re_enabled = False
        if "enabled" in given:
            if body.enabled is None:
                raise ValidationFailed.field("enabled", "must be true or false")
            re_enabled = body.enabled and not endpoint.enabled
            endpoint.enabled = body.enabled
            endpoint.disabled_reason = (
                None if body.enabled else f"disabled by {change.caller.actor}"
            )
            if re_enabled:
                endpoint.failing_since = None
        endpoint.updated_at = await self.repo.now()
        await self.repo.flush()
        if re_enabled:
            # What failed while the endpoint was broken goes out again: the latest
            # terminal event of each such task, within the redelivery window.
            await self.repo.redeliver_failed(endpoint.id, self.settings.webhooks.redeliver_window_s)
        await self._audit(change, endpoint, body.model_dump(mode="json", exclude_unset=True))
        return endpoint_with_secret(endpoint)

    async def delete(self, change: Change, endpoint_id: uuid.UUID) -> None:
        endpoint = await self._get(change.caller.tenant, endpoint_id, lock=True)
        await self.repo.delete_endpoint(endpoint.tenant, endpoint_id)
        await self._audit(change, endpoint, {"url": endpoint.url})

    async def rotate_secret(self, change: Change, endpoint_id: uuid.UUID) -> WebhookWithSecret:
        """A new secret; the current one keeps signing alongside it for the grace period
        (one previous secret at a time: rotating again ends the earlier grace)."""
        endpoint = await self._get(change.caller.tenant, endpoint_id, lock=True)
        now = await self.repo.now()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + timedelta(
            seconds=self.settings.webhooks.secret_grace_s
        )
        endpoint.secret = signing.generate_secret()
        endpoint.updated_at = now
        await self.repo.flush()
        await self._audit(change, endpoint, {"grace_until": endpoint.previous_secret_expires_at})
        return endpoint_with_secret(endpoint)

    async def _audit(
        self, change: Change, endpoint: WebhookEndpoint, details: dict[str, Any]
    ) -> None:
        await self.audit.record(
            change,
            target=f"webhook:{endpoint.id}",
            tenant=endpoint.tenant,
            details=to_jsonable_python(details),
        )

    async def signing_secret(self, tenant: str) -> str:
        return await self.repo.tenant_secret(tenant, signing.generate_secret())

    async def deliveries_of(self, task: Task) -> DeliveryList:
        """The deliveries of a task the caller could already see."""
        deliveries = await self.repo.deliveries_of_task(task.tenant, task.id)
        return DeliveryList(items=await self._reads(deliveries))

    async def retry(self, change: Change, delivery_id: uuid.UUID) -> DeliveryRead:
        delivery = await self.repo.retry_now(change.caller.tenant, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} not found")
        await self.audit.record(
            change,
            target=f"delivery:{delivery.id}",
            tenant=delivery.tenant,
            details={
                "task_id": str(delivery.task_id) if delivery.task_id else None,
                "url": delivery.url,
            },
        )
        return (await self._reads([delivery]))[0]

    def _match(self, caller: Caller, where: DeliveryFilter) -> DeliveryMatch:
        """The filter within the caller's reach: a tenant's key sees its own tenant's,
        whatever `tenant` says (as in GET /v1/tasks)."""
        if (
            where.created_after
            and where.created_before
            and where.created_after >= where.created_before
        ):
            raise ValidationFailed.field("created_before", "must be after created_after")
        return DeliveryMatch(
            tenant=caller.tenant if caller.tenant is not None else where.tenant,
            state=where.status.value,
            endpoint_id=where.endpoint_id,
            task_id=where.task_id,
            created_after=where.created_after,
            created_before=where.created_before,
        )

    async def page(
        self, caller: Caller, where: DeliveryFilter, *, limit: int, cursor: str | None
    ) -> DeliveryPage:
        """The deliveries that match, newest first, a keyset page at a time."""
        after = decode_cursor(cursor) if cursor else None
        rows = await self.repo.page(self._match(caller, where), limit=limit + 1, after=after)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return DeliveryPage(items=await self._reads(page), next_cursor=next_cursor)

    async def summary(self, caller: Caller, tenant: str | None = None) -> DeliverySummary:
        """Failing and failed deliveries per endpoint, the most troubled first."""
        scope = caller.tenant if caller.tenant is not None else tenant
        rows = await self.repo.troubles(scope, cap=SUMMARY_LIMIT)
        return DeliverySummary(
            items=[
                EndpointSummary(
                    endpoint_id=r.endpoint_id,
                    tenant=r.tenant,
                    url=r.url,
                    failing=r.failing,
                    failed=r.failed,
                )
                for r in rows
            ],
            complete=sum(r.failing + r.failed for r in rows) < SUMMARY_LIMIT,
        )

    async def count_retryable(self, caller: Caller, body: BulkRetry) -> BulkRetryResult:
        """How many deliveries a bulk retry with this filter would queue now."""
        counted = await self.repo.count_matching(
            self._retryable(caller, body), cap=BULK_RETRY_LIMIT
        )
        return BulkRetryResult(
            matched=counted.matched, retried=0, limit=BULK_RETRY_LIMIT, as_of=counted.as_of
        )

    async def bulk_retry(self, change: Change, body: BulkRetry) -> BulkRetryResult:
        """Without `expected`, the count (nothing changes). With it, every matching failing
        or failed delivery is due again now, in one statement, unless more match than the
        user confirmed: the set grew since the count (new failures), so the retry is refused
        (409) rather than queue deliveries nobody agreed to. Fewer is fine: some were
        delivered meanwhile."""
        if body.expected is None:
            return await self.count_retryable(change.caller, body)
        match = self._retryable(change.caller, body)
        done = await self.repo.retry_matching(match, cap=BULK_RETRY_LIMIT, at_most=body.expected)
        if done.matched > body.expected:
            raise Conflict(
                f"{done.matched} deliveries match now, more than the {body.expected} confirmed: "
                "count again and confirm",
                {"matched": done.matched, "expected": body.expected},
            )
        filter_ = body.model_dump(mode="json", exclude={"expected"}, exclude_none=True)
        await self.audit.record(
            change,
            target="deliveries?" + "&".join(f"{k}={v}" for k, v in sorted(filter_.items())),
            tenant=match.tenant,
            details={"filter": filter_, "matched": done.matched, "retried": done.retried},
        )
        return BulkRetryResult(
            matched=done.matched, retried=done.retried, limit=BULK_RETRY_LIMIT, as_of=done.as_of
        )

    def _retryable(self, caller: Caller, body: BulkRetry) -> DeliveryMatch:
        if body.status not in RETRYABLE:
            raise ValidationFailed.field(
                "status",
                "only failing or failed deliveries can be retried: troubled, failing or failed",
            )
        return self._match(caller, body)

    async def recent_attempts(
        self, caller: Caller, endpoint_id: uuid.UUID, *, limit: int = 20
    ) -> RecentAttempts:
        """The endpoint's latest delivery attempts, newest first."""
        endpoint = await self._get(caller.tenant, endpoint_id)
        rows = await self.repo.recent_attempts(endpoint.id, limit=limit)
        return RecentAttempts(
            items=[
                RecentAttempt(
                    **_attempt_read(r.attempt).model_dump(),
                    delivery_id=r.attempt.delivery_id,
                    event_type=EventType(r.event_type),
                    task_id=r.task_id,
                )
                for r in rows
            ]
        )

    async def send_test(self, change: Change, endpoint_id: uuid.UUID) -> DeliveryRead:
        """A `webhook.test` event to this endpoint now, through the delivery loop like any
        other: signed with the endpoint's secrets, retried on failure, its attempts recorded."""
        endpoint = await self._get(change.caller.tenant, endpoint_id)
        if not endpoint.enabled:
            raise Conflict(f"webhook endpoint {endpoint_id} is disabled: enable it to test it")
        data = EndpointTestData(
            endpoint_id=endpoint.id, tenant=endpoint.tenant, requested_by=change.caller.actor
        )
        delivery = await self.repo.add_test_delivery(
            endpoint, EventType.TEST.value, data.model_dump(mode="json")
        )
        await self._audit(change, endpoint, {"delivery_id": str(delivery.id)})
        return (await self._reads([delivery]))[0]

    async def _reads(self, rows: list[Delivery]) -> list[DeliveryRead]:
        attempts = await self.repo.attempts_of([d.id for d in rows])
        types = await self.repo.event_types([d.event_id for d in rows])
        by_delivery: dict[uuid.UUID, list[AttemptRead]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(_attempt_read(a))
        return [
            DeliveryRead(
                id=d.id,
                event_id=d.event_id,
                event_type=EventType(types[d.event_id]),
                task_id=d.task_id,
                tenant=d.tenant,
                endpoint_id=d.endpoint_id,
                url=d.url,
                status=DeliveryStatus(d.status),
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                created_at=d.created_at,
                completed_at=d.completed_at,
                attempt_log=by_delivery.get(d.id, []),
            )
            for d in rows
        ]
