from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import arrays_of, claim_statement, of_tenant, rows_of, rows_param
from app.models import Delivery, DeliveryAttempt, Event, TenantSecret, WebhookEndpoint
from app.models.delivery import TROUBLED

# The wake-up channel of the deliveries_notify_due trigger (migration 0620).
DELIVERY_CHANNEL = "pollhook_deliveries"
RESPONSE_BODY_LIMIT = 4096


# What one delivery loop may send at once to one target is capped per key: the endpoint,
# or for callback_url deliveries (they have no endpoint row) the URL's scheme and authority.
def _limit_key(row: str = "") -> str:
    """The key as SQL, of the row aliased `row` (unqualified columns when empty)."""
    at = f"{row}." if row else ""
    return f"coalesce(CAST({at}endpoint_id AS text), substring({at}url from '^[^/]*//[^/?#]*'))"


LIMIT_KEY = _limit_key()

# The due rows, oldest first, at most `per_key` per key counting what this loop already
# holds (`held_keys`, `held`). Ranked among the first `scan` due rows whose key still has
# room, so a backlog for an endpoint at its limit is skipped, not waited behind; the claim's
# FOR UPDATE SKIP LOCKED then takes them.
_DUE_WITHIN_LIMITS = f"""status = 'pending' AND id = ANY(ARRAY(
    SELECT r.id FROM (
        SELECT id, {LIMIT_KEY} AS k,
               row_number() OVER (PARTITION BY {LIMIT_KEY} ORDER BY next_attempt_at, id) AS n
        FROM (
            SELECT id, endpoint_id, url, next_attempt_at FROM deliveries
            WHERE status = 'pending' AND next_attempt_at <= now()
              AND NOT {LIMIT_KEY} = ANY(CAST(:full_keys AS text[]))
            ORDER BY next_attempt_at
            LIMIT :scan
        ) candidates
    ) r
    LEFT JOIN {arrays_of({"held_key": "text", "held": "int"}, alias="h")} ON h.held_key = r.k
    WHERE r.n + coalesce(h.held, 0) <= :per_key
))"""

# One statement: the claim, and everything the send needs (the event, the secrets, whether
# the endpoint is still enabled), so a claimed batch costs no further reads.
_CLAIM = text(
    f"""
    WITH claimed AS ({
        claim_statement(
            table="deliveries",
            due_column="next_attempt_at",
            where=_DUE_WITHIN_LIMITS,
            returning="c.id, c.fencing_token, c.tenant, c.url, c.endpoint_id, c.attempts, "
            "c.event_id, c.task_id",
        ).text
    })
    SELECT d.id, d.fencing_token, d.tenant, d.url, d.endpoint_id, d.attempts,
           {_limit_key("d")} AS limit_key,
           e.id AS event_id, e.type, e.created_at AS event_created_at, e.payload,
           w.secret AS endpoint_secret, w.enabled,
           CASE WHEN w.previous_secret_expires_at > now()
                THEN w.previous_secret END AS previous_secret,
           t.secret AS tenant_secret, tk.archive AS task_archive
    FROM claimed d
    JOIN events e ON e.id = d.event_id
    LEFT JOIN tasks tk ON tk.id = d.task_id
    LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
    LEFT JOIN tenant_secrets t ON t.tenant = d.tenant
    """
)

# Every finished attempt of a batch in one statement. Each delivery is written only while its
# fencing token is the one it was claimed with, and the write bumps the token: a late answer
# after another replica took the delivery over, or a second write of the same answer, matches
# nothing. The attempt rows come from the rows actually written. Endpoint bookkeeping runs
# once per endpoint and only where it changes something (a 2xx ends a failure streak, a
# failure starts one, a 410 disables); the rows are locked in id order, so two replicas
# flushing at once cannot deadlock on them.
_ATTEMPTS = arrays_of(
    {
        "id": "uuid",
        "token": "bigint",
        "status": "text",
        "delay_s": "float8",
        "code": "int",
        "error": "text",
        "duration_ms": "int",
        "body": "text",
        "counted": "bool",
        "verdict": "text",
    },
    alias="x",
)
_RECORD = text(
    f"""
    WITH x AS (SELECT * FROM {_ATTEMPTS}),
    recorded AS (
        UPDATE deliveries d
        SET status = x.status,
            last_status_code = x.code,
            last_error = x.error,
            lease_owner = NULL,
            lease_expires_at = NULL,
            updated_at = now(),
            next_attempt_at = now() + make_interval(secs => x.delay_s),
            completed_at = CASE WHEN x.status <> 'pending' THEN now() END,
            attempts = d.attempts + CASE WHEN x.counted THEN 1 ELSE 0 END,
            fencing_token = d.fencing_token + 1
        FROM x
        WHERE d.id = x.id AND d.fencing_token = x.token
        RETURNING d.id, d.fencing_token - 1 AS token, d.attempts, d.endpoint_id
    ),
    attempts AS (
        INSERT INTO delivery_attempts
            (delivery_id, attempt, duration_ms, status_code, response_body, error)
        SELECT r.id, r.attempts, x.duration_ms, x.code, x.body, x.error
        FROM recorded r JOIN x ON x.id = r.id AND x.token = r.token
        WHERE x.counted
    ),
    health AS (
        SELECT r.endpoint_id,
               bool_or(x.verdict = 'delivered') AS answered,
               bool_or(x.verdict IN ('retry', 'give_up')) AS failed,
               bool_or(x.verdict = 'endpoint_gone') AS gone
        FROM recorded r JOIN x ON x.id = r.id AND x.token = r.token
        WHERE x.counted AND r.endpoint_id IS NOT NULL
        GROUP BY r.endpoint_id
    ),
    changing AS (
        SELECT w.id, h.answered, h.failed, h.gone
        FROM webhook_endpoints w JOIN health h ON h.endpoint_id = w.id
        WHERE h.gone
           OR (h.answered AND w.failing_since IS NOT NULL)
           OR (h.failed AND NOT h.answered AND w.failing_since IS NULL)
        ORDER BY w.id
        FOR UPDATE OF w
    ),
    endpoints AS (
        UPDATE webhook_endpoints w
        SET failing_since = CASE WHEN c.answered THEN NULL
                                 WHEN c.failed THEN coalesce(w.failing_since, now())
                                 ELSE w.failing_since END,
            enabled = w.enabled AND NOT c.gone,
            disabled_reason = CASE WHEN c.gone THEN 'the endpoint answered 410 Gone'
                                   ELSE w.disabled_reason END,
            updated_at = now()
        FROM changing c
        WHERE w.id = c.id
    )
    SELECT id, token FROM recorded
    """
)


# Each state a list can ask for, spelled so that the planner proves it implies the predicate of
# ix_deliveries_troubled (literals, not parameters: a generic plan cannot prove it for those).
_STATE_SQL = {
    "troubled": f"({TROUBLED})",
    "failing": "(status = 'pending' AND attempts > 0)",
    "failed": "(status = 'failed')",
    "delivered": "(status = 'succeeded')",
    "all": "true",
}


@dataclass(frozen=True)
class DeliveryMatch:
    """Which deliveries a list or a bulk retry takes; `tenant` None is every tenant's."""

    tenant: str | None
    state: str = "troubled"  # a key of _STATE_SQL
    endpoint_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [
            of_tenant(Delivery.tenant, self.tenant),
            literal_column(_STATE_SQL[self.state], Boolean),
        ]
        if self.endpoint_id is not None:
            conditions.append(Delivery.endpoint_id == self.endpoint_id)
        if self.task_id is not None:
            conditions.append(Delivery.task_id == self.task_id)
        if self.created_after is not None:
            conditions.append(Delivery.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(Delivery.created_at < self.created_before)
        return conditions


@dataclass(frozen=True)
class BulkRetried:
    matched: int
    retried: int
    as_of: datetime


@dataclass(frozen=True)
class EndpointTrouble:
    endpoint_id: uuid.UUID | None
    tenant: str
    url: str | None
    failing: int
    failed: int


@dataclass(frozen=True)
class EndpointAttempt:
    attempt: DeliveryAttempt
    event_type: str
    task_id: uuid.UUID | None


@dataclass(frozen=True)
class OutboxEntry:
    """One event to fan out to its deliveries."""

    event_id: uuid.UUID
    task_id: uuid.UUID
    tenant: str
    type: str
    # Sent to endpoints that name no types and to the callback (DEFAULT_EVENT_TYPES).
    terminal: bool
    callback_url: str | None
    hold_s: float = 0.0


_OUTBOX_ROWS = rows_of(
    Delivery.__table__,
    ["event_id", "task_id", "tenant"],
    alias="ev",
    extra="type text, terminal boolean, callback_url text, hold_s float8",
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
    limit_key: str  # what the per-endpoint concurrency limit counts by (LIMIT_KEY)
    # The task's archive as it stands now (`tasks.archive`): each attempt shows it with
    # links minted for that attempt.
    task_archive: dict[str, Any] | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt as it is written: the delivery's new state and the attempt row.
    `counted` is False for a delivery closed without an attempt (its endpoint is disabled)."""

    delivery_id: uuid.UUID
    token: int
    status: str
    next_attempt_in_s: float | None
    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str | None
    counted: bool
    verdict: str


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

    async def endpoints(self, tenant: str | None) -> list[WebhookEndpoint]:
        stmt = (
            select(WebhookEndpoint)
            .where(of_tenant(WebhookEndpoint.tenant, tenant))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return list(await self.session.scalars(stmt))

    async def endpoint(
        self, tenant: str | None, endpoint_id: uuid.UUID, *, for_update: bool = False
    ) -> WebhookEndpoint | None:
        stmt = select(WebhookEndpoint).where(
            of_tenant(WebhookEndpoint.tenant, tenant), WebhookEndpoint.id == endpoint_id
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
                       'pending', now() + make_interval(secs => ev.hold_s)
                FROM {_OUTBOX_ROWS}
                JOIN webhook_endpoints e ON e.tenant = ev.tenant AND e.enabled
                  AND ((e.events IS NULL AND ev.terminal) OR ev.type = ANY(e.events))
                UNION ALL
                SELECT gen_random_uuid(), ev.event_id, ev.task_id, NULL, ev.tenant,
                       ev.callback_url, 'pending', now() + make_interval(secs => ev.hold_s)
                FROM {_OUTBOX_ROWS}
                WHERE ev.terminal AND ev.callback_url IS NOT NULL
                """
            ),
            {"rows": rows_param(asdict(entry) for entry in entries)},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def claim_due(
        self,
        *,
        limit: int,
        owner: str,
        lease_s: float,
        per_key: int,
        held: Mapping[str, int],
    ) -> list[ClaimedDelivery]:
        """Claim due deliveries, oldest first (SKIP LOCKED: replicas share the queue), at
        most `per_key` per endpoint counting the `held` ones (limit key -> in flight).

        The lease moves next_attempt_at to its end, so a replica that dies after claiming
        leaves deliveries that fall due again by themselves, with the same event (and so the
        same webhook-id).
        """
        rows = await self.session.execute(
            _CLAIM,
            {
                "limit": limit,
                "owner": owner,
                "lease_s": lease_s,
                "per_key": per_key,
                # Wide enough that rows locked by another replica's claim in progress
                # rarely leave this one short.
                "scan": 4 * limit,
                "full_keys": [key for key, count in held.items() if count >= per_key],
                "held_key": list(held),
                "held": list(held.values()),
            },
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
                    limit_key=r.limit_key,
                    task_archive=r.task_archive,
                )
            )
        return result

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> set[tuple[uuid.UUID, int]]:
        """Write finished attempts (see _RECORD); the (id, token) of each delivery whose
        claim still held, the only ones written (a delivery may be in one batch under an
        older claim too, whose lease ran out while its record waited)."""
        if not records:
            return set()
        # Sorted, so that concurrent writers meet the rows in one order.
        ordered = sorted(records, key=lambda r: r.delivery_id)
        rows = await self.session.execute(
            _RECORD,
            {
                "id": [r.delivery_id for r in ordered],
                "token": [r.token for r in ordered],
                "status": [r.status for r in ordered],
                "delay_s": [r.next_attempt_in_s for r in ordered],
                "code": [r.status_code for r in ordered],
                "error": [r.error for r in ordered],
                "duration_ms": [r.duration_ms for r in ordered],
                "body": [r.response_body for r in ordered],
                "counted": [r.counted for r in ordered],
                "verdict": [r.verdict for r in ordered],
            },
        )
        return {(row.id, row.token) for row in rows}

    async def release_held(self, event_id: uuid.UUID) -> bool:
        """Send a held event now, if none of its deliveries has gone out: True when every
        one was still waiting for its first attempt, unclaimed (they are due now), False
        when one was claimed or attempted already. The deliveries stay locked until the
        transaction ends, so a claim cannot take one between this answer and the commit
        (the claim skips locked rows)."""
        rows = (
            await self.session.execute(
                text(
                    """
                    SELECT id, attempts, lease_owner, status FROM deliveries
                    WHERE event_id = :event_id
                    ORDER BY id
                    FOR UPDATE
                    """
                ),
                {"event_id": event_id},
            )
        ).all()
        if any(r.attempts > 0 or r.lease_owner is not None or r.status != "pending" for r in rows):
            return False
        await self.session.execute(
            text(
                "UPDATE deliveries SET next_attempt_at = now() "
                "WHERE event_id = :event_id AND next_attempt_at > now()"
            ),
            {"event_id": event_id},
        )
        return True

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

    async def delivery(self, tenant: str | None, delivery_id: uuid.UUID) -> Delivery | None:
        stmt = select(Delivery).where(
            of_tenant(Delivery.tenant, tenant), Delivery.id == delivery_id
        )
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

    async def retry_now(self, tenant: str | None, delivery_id: uuid.UUID) -> Delivery | None:
        """Due again now (the trigger wakes the loop); None if the caller's scope has no such
        one."""
        delivery: Delivery | None = await self.session.scalar(
            update(Delivery)
            .where(of_tenant(Delivery.tenant, tenant), Delivery.id == delivery_id)
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

    async def page(
        self,
        match: DeliveryMatch,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Delivery]:
        """Newest first; keyset on (created_at, id), served by ix_deliveries_troubled for the
        failing and failed, else ix_deliveries_tenant_created (one tenant's) or
        ix_deliveries_created (every tenant's, an operator's)."""
        stmt = select(Delivery).where(*match.where())
        if after is not None:
            stmt = stmt.where(tuple_(Delivery.created_at, Delivery.id) < tuple_(*after))
        stmt = stmt.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))

    async def count_matching(self, match: DeliveryMatch, *, cap: int) -> BulkRetried:
        """How many deliveries match, counting at most `cap` (the newest)."""
        matched = (
            select(Delivery.id)
            .where(*match.where())
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(cap)
            .subquery()
        )
        row = (
            await self.session.execute(select(func.count(), func.now()).select_from(matched))
        ).one()
        return BulkRetried(matched=int(row[0]), retried=0, as_of=row[1])

    async def retry_matching(self, match: DeliveryMatch, *, cap: int, at_most: int) -> BulkRetried:
        """Due again now: the newest `cap` deliveries that match, in one statement, unless
        more than `at_most` match (then none). A delivery in flight (its lease running) is
        counted and left alone: its attempt is under way, and a second claim would send it
        twice."""
        matched = (
            select(Delivery.id)
            .where(*match.where())
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(cap)
            .with_for_update()
            .cte("matched")
        )
        count = select(func.count()).select_from(matched).scalar_subquery()
        retried = (
            update(Delivery)
            .where(
                Delivery.id.in_(select(matched.c.id)),
                count <= at_most,
                or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at <= func.now()),
            )
            .values(
                status="pending",
                next_attempt_at=func.now(),
                completed_at=None,
                updated_at=func.now(),
            )
            .returning(Delivery.id)
            .cte("retried")
        )
        row = (
            await self.session.execute(
                select(
                    count, select(func.count()).select_from(retried).scalar_subquery(), func.now()
                )
            )
        ).one()
        return BulkRetried(matched=int(row[0]), retried=int(row[1]), as_of=row[2])

    async def troubles(self, tenant: str | None, *, cap: int) -> list[EndpointTrouble]:
        """Failing and failed deliveries per endpoint (callback_urls as one per tenant),
        counted over the newest `cap` of them: the count stays bounded however many there
        are (ix_deliveries_troubled)."""
        rows = await self.session.execute(
            text(
                f"""
                SELECT t.endpoint_id, t.tenant, w.url,
                       count(*) FILTER (WHERE t.status = 'pending') AS failing,
                       count(*) FILTER (WHERE t.status = 'failed') AS failed
                FROM (
                    SELECT endpoint_id, tenant, status FROM deliveries
                    WHERE ({TROUBLED}) AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)
                    ORDER BY created_at DESC
                    LIMIT :cap
                ) t
                LEFT JOIN webhook_endpoints w ON w.id = t.endpoint_id
                GROUP BY t.endpoint_id, t.tenant, w.url
                ORDER BY count(*) DESC, t.tenant, w.url
                """
            ),
            {"tenant": tenant, "cap": cap},
        )
        return [
            EndpointTrouble(r.endpoint_id, r.tenant, r.url, int(r.failing), int(r.failed))
            for r in rows
        ]

    async def recent_attempts(self, endpoint_id: uuid.UUID, *, limit: int) -> list[EndpointAttempt]:
        """The endpoint's latest attempts, newest first: those of its `2 * limit` most
        recently updated deliveries (ix_deliveries_endpoint_updated; every attempt updates
        its delivery, so these hold the latest attempts unless more than `limit` deliveries
        were retried or closed without an attempt since)."""
        recent = (
            select(Delivery.id, Delivery.task_id, Delivery.event_id)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.updated_at.desc())
            .limit(2 * limit)
            .subquery()
        )
        rows = await self.session.execute(
            select(DeliveryAttempt, Event.type, recent.c.task_id)
            .join(recent, recent.c.id == DeliveryAttempt.delivery_id)
            .join(Event, Event.id == recent.c.event_id)
            .order_by(DeliveryAttempt.attempted_at.desc(), DeliveryAttempt.id.desc())
            .limit(limit)
        )
        return [EndpointAttempt(a, event_type, task_id) for a, event_type, task_id in rows]

    async def add_test_delivery(
        self, endpoint: WebhookEndpoint, event_type: str, payload: dict[str, Any]
    ) -> Delivery:
        """An event no task caused, and its delivery to this endpoint alone, due now."""
        event = Event(
            task_id=None, tenant=endpoint.tenant, type=event_type, sequence=0, payload=payload
        )
        self.session.add(event)
        await self.session.flush()
        delivery = Delivery(
            event_id=event.id,
            task_id=None,
            endpoint_id=endpoint.id,
            tenant=endpoint.tenant,
            url=endpoint.url,
            status="pending",
            next_attempt_at=func.now(),
        )
        self.session.add(delivery)
        await self.session.flush()
        await self.session.refresh(delivery)
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
