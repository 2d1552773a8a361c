from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import claim_statement, rows_of, rows_param
from app.models import Delivery, DeliveryAttempt, Event, TenantSecret, WebhookEndpoint

# The wake-up channel of the deliveries_notify_due trigger (migration 0620).
DELIVERY_CHANNEL = "pollhook_deliveries"
RESPONSE_BODY_LIMIT = 4096


_CLAIM = claim_statement(
    table="deliveries", due_column="next_attempt_at", where="status = 'pending'", returning="c.id"
)


@dataclass(frozen=True)
class OutboxEntry:
    """One event to fan out to its deliveries."""

    event_id: uuid.UUID
    task_id: uuid.UUID
    tenant: str
    type: str
    terminal: bool
    callback_url: str | None


_OUTBOX_ROWS = rows_of(
    Delivery.__table__,
    ["event_id", "task_id", "tenant"],
    alias="ev",
    extra="type text, terminal boolean, callback_url text",
)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this replica may attempt while `token` still matches."""

    id: uuid.UUID
    token: int
    tenant: str
    url: str
    endpoint_id: uuid.UUID | None
    attempts: int
    event_id: uuid.UUID
    event_type: str
    event_created_at: datetime
    payload: dict[str, Any]
    secrets: list[str]
    endpoint_enabled: bool


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- endpoints --------------------------------------------------------------------

    async def add_endpoint(self, **values: Any) -> WebhookEndpoint:
        endpoint = WebhookEndpoint(**values)
        self.session.add(endpoint)
        await self.session.flush()
        await self.session.refresh(endpoint)
        return endpoint

    async def endpoints(self, tenant: str) -> list[WebhookEndpoint]:
        stmt = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant == tenant)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return list(await self.session.scalars(stmt))

    async def endpoint(
        self, tenant: str, endpoint_id: uuid.UUID, *, for_update: bool = False
    ) -> WebhookEndpoint | None:
        stmt = select(WebhookEndpoint).where(
            WebhookEndpoint.tenant == tenant, WebhookEndpoint.id == endpoint_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        endpoint: WebhookEndpoint | None = await self.session.scalar(stmt)
        return endpoint

    async def delete_endpoint(self, tenant: str, endpoint_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            delete(WebhookEndpoint).where(
                WebhookEndpoint.tenant == tenant, WebhookEndpoint.id == endpoint_id
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def now(self) -> datetime:
        value = await self.session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    async def flush(self) -> None:
        await self.session.flush()

    # --- tenant signing secret ----------------------------------------------------------

    async def tenant_secret(self, tenant: str, new_secret: str) -> str:
        """The tenant's callback signing secret, created (as `new_secret`) on first use."""
        await self.session.execute(
            insert(TenantSecret)
            .values(tenant=tenant, secret=new_secret)
            .on_conflict_do_nothing(index_elements=["tenant"])
        )
        secret = await self.session.scalar(
            select(TenantSecret.secret).where(TenantSecret.tenant == tenant)
        )
        assert secret is not None
        return secret

    # --- the outbox ---------------------------------------------------------------------

    async def fan_out(self, entries: list[OutboxEntry]) -> int:
        """Create one delivery per subscribed, enabled endpoint of each event (and the
        task's callback_url for terminal events), in the transaction that wrote the
        events: one statement for the whole set."""
        result = await self.session.execute(
            text(
                f"""
                INSERT INTO deliveries
                    (id, event_id, task_id, endpoint_id, tenant, url, status, next_attempt_at)
                SELECT gen_random_uuid(), ev.event_id, ev.task_id, e.id, e.tenant, e.url,
                       'pending', now()
                FROM {_OUTBOX_ROWS}
                JOIN webhook_endpoints e ON e.tenant = ev.tenant AND e.enabled
                  AND ((e.events IS NULL AND ev.terminal) OR ev.type = ANY(e.events))
                UNION ALL
                SELECT gen_random_uuid(), ev.event_id, ev.task_id, NULL, ev.tenant,
                       ev.callback_url, 'pending', now()
                FROM {_OUTBOX_ROWS}
                WHERE ev.terminal AND ev.callback_url IS NOT NULL
                """
            ),
            {"rows": rows_param(asdict(entry) for entry in entries)},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def claim_due(self, *, limit: int, owner: str, lease_s: float) -> list[ClaimedDelivery]:
        """Claim due deliveries, oldest first (SKIP LOCKED: replicas share the queue).

        The lease moves next_attempt_at to its end, so a replica that dies after claiming
        leaves deliveries that fall due again by themselves, with the same event (and so the
        same webhook-id).
        """
        claimed = (
            (
                await self.session.execute(
                    _CLAIM,
                    {"limit": limit, "owner": owner, "lease_s": lease_s},
                )
            )
            .scalars()
            .all()
        )
        if not claimed:
            return []
        rows = await self.session.execute(
            text(
                """
                SELECT d.id, d.fencing_token, d.tenant, d.url, d.endpoint_id, d.attempts,
                       e.id AS event_id, e.type, e.created_at AS event_created_at, e.payload,
                       w.secret AS endpoint_secret, w.enabled,
                       CASE WHEN w.previous_secret_expires_at > now()
                            THEN w.previous_secret END AS previous_secret,
                       t.secret AS tenant_secret
                FROM deliveries d
                JOIN events e ON e.id = d.event_id
                LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
                LEFT JOIN tenant_secrets t ON t.tenant = d.tenant
                WHERE d.id = ANY(:ids)
                """
            ),
            {"ids": list(claimed)},
        )
        result = []
        for r in rows:
            if r.endpoint_id is None:
                secrets = [r.tenant_secret] if r.tenant_secret else []
            else:
                secrets = [s for s in (r.endpoint_secret, r.previous_secret) if s]
            result.append(
                ClaimedDelivery(
                    id=r.id,
                    token=r.fencing_token,
                    tenant=r.tenant,
                    url=r.url,
                    endpoint_id=r.endpoint_id,
                    attempts=r.attempts,
                    event_id=r.event_id,
                    event_type=r.type,
                    event_created_at=r.event_created_at,
                    payload=r.payload,
                    secrets=secrets,
                    endpoint_enabled=True if r.endpoint_id is None else bool(r.enabled),
                )
            )
        return result

    async def record_attempt(
        self,
        claim: ClaimedDelivery,
        *,
        status: str,
        next_attempt_in_s: float | None,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        response_body: str | None,
        count_attempt: bool = True,
    ) -> bool:
        """Write the attempt and the delivery's new state if the claim still holds."""
        values: dict[str, Any] = {
            "status": status,
            "last_status_code": status_code,
            "last_error": error,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": func.now(),
            "next_attempt_at": (
                func.now() + timedelta(seconds=next_attempt_in_s)
                if next_attempt_in_s is not None
                else None
            ),
            "completed_at": func.now() if status != "pending" else None,
        }
        if count_attempt:
            values["attempts"] = Delivery.attempts + 1
        result = await self.session.execute(
            update(Delivery)
            .where(Delivery.id == claim.id, Delivery.fencing_token == claim.token)
            .values(**values)
            .returning(Delivery.attempts)
        )
        attempts = result.scalar_one_or_none()
        if attempts is None:
            return False
        if count_attempt:
            self.session.add(
                DeliveryAttempt(
                    delivery_id=claim.id,
                    attempt=attempts,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    response_body=response_body,
                    error=error,
                )
            )
            await self.session.flush()
        return True

    async def endpoint_succeeded(self, endpoint_id: uuid.UUID) -> None:
        await self.session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_not(None))
            .values(failing_since=None, updated_at=func.now())
        )

    async def endpoint_failed(self, endpoint_id: uuid.UUID) -> None:
        await self.session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_(None))
            .values(failing_since=func.now(), updated_at=func.now())
        )

    async def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> None:
        await self.session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(enabled=False, disabled_reason=reason, updated_at=func.now())
        )

    async def disable_failing_endpoints(self, failing_for_s: float) -> int:
        """Disable endpoints that have failed without one success for `failing_for_s`."""
        result = await self.session.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.enabled.is_(True),
                WebhookEndpoint.failing_since < func.now() - timedelta(seconds=failing_for_s),
            )
            .values(
                enabled=False,
                disabled_reason=f"failing without a success for {_span(failing_for_s)}",
                updated_at=func.now(),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def redeliver_failed(self, endpoint_id: uuid.UUID, window_s: float) -> int:
        """For each task whose delivery to this endpoint failed within the window, queue its
        latest terminal event to the endpoint again (reusing the delivery row, so the
        webhook-id stays the event's)."""
        result = await self.session.execute(
            text(
                """
                WITH failed_tasks AS (
                    SELECT DISTINCT d.task_id FROM deliveries d
                    WHERE d.endpoint_id = :endpoint_id AND d.status = 'failed'
                      AND d.updated_at > now() - make_interval(secs => CAST(:window AS float8))
                ), latest AS (
                    SELECT DISTINCT ON (e.task_id) e.id AS event_id, e.task_id, e.tenant
                    FROM events e JOIN failed_tasks f ON f.task_id = e.task_id
                    WHERE e.type IN ('task.succeeded', 'task.failed', 'task.expired',
                                     'task.timed_out', 'task.cancelled')
                    ORDER BY e.task_id, e.sequence DESC
                )
                INSERT INTO deliveries
                    (id, event_id, task_id, endpoint_id, tenant, url, status, next_attempt_at)
                SELECT gen_random_uuid(), l.event_id, l.task_id, w.id, l.tenant, w.url,
                       'pending', now()
                FROM latest l JOIN webhook_endpoints w ON w.id = :endpoint_id
                ON CONFLICT (event_id, endpoint_id) DO UPDATE
                SET status = 'pending', next_attempt_at = now(), completed_at = NULL,
                    url = EXCLUDED.url, updated_at = now()
                """
            ),
            {"endpoint_id": endpoint_id, "window": window_s},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # --- deliveries as the API shows them ------------------------------------------------

    async def deliveries_of_task(self, tenant: str, task_id: uuid.UUID) -> list[Delivery]:
        stmt = (
            select(Delivery)
            .where(Delivery.tenant == tenant, Delivery.task_id == task_id)
            .order_by(Delivery.created_at, Delivery.id)
        )
        return list(await self.session.scalars(stmt))

    async def delivery(self, tenant: str, delivery_id: uuid.UUID) -> Delivery | None:
        stmt = select(Delivery).where(Delivery.tenant == tenant, Delivery.id == delivery_id)
        delivery: Delivery | None = await self.session.scalar(stmt)
        return delivery

    async def attempts_of(self, delivery_ids: list[uuid.UUID]) -> list[DeliveryAttempt]:
        if not delivery_ids:
            return []
        stmt = (
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(delivery_ids))
            .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt)
        )
        return list(await self.session.scalars(stmt))

    async def event_types(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not event_ids:
            return {}
        rows = await self.session.execute(
            select(Event.id, Event.type).where(Event.id.in_(event_ids))
        )
        return {event_id: event_type for event_id, event_type in rows}

    async def retry_now(self, tenant: str, delivery_id: uuid.UUID) -> Delivery | None:
        """Due again now (the trigger wakes the loop); None if the tenant has no such one."""
        delivery: Delivery | None = await self.session.scalar(
            update(Delivery)
            .where(Delivery.tenant == tenant, Delivery.id == delivery_id)
            .values(
                status="pending",
                next_attempt_at=func.now(),
                completed_at=None,
                updated_at=func.now(),
            )
            .returning(Delivery)
            .execution_options(populate_existing=True)
        )
        return delivery

    async def queue_stats(self) -> tuple[int, float | None]:
        """Pending deliveries, and the age in seconds of the oldest undelivered event."""
        row = (
            await self.session.execute(
                text(
                    "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at)) "
                    "FROM deliveries WHERE status = 'pending'"
                )
            )
        ).one()
        return int(row[0]), float(row[1]) if row[1] is not None else None


def _span(seconds: float) -> str:
    """A readable duration: the disable window is days by default, seconds in tests (where
    "1.15741e-05 days" said nothing)."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
