"""The delivery loop: sends the outbox's deliveries, signed, and records every attempt.

Deliveries are rows written in the transaction of their event, so nothing is lost if a
process dies: a claimed delivery falls due again when its lease runs out, with the same
event and so the same webhook-id. A trigger's NOTIFY sends a new delivery right after its
event commits; the tick carries retries and anything a crash left behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import __version__
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.http_client import read_at_most, retry_after_seconds
from app.core.logging import get_logger
from app.core.loop import LeasedLoop
from app.core.metrics import ATTEMPT_SECONDS, DELIVERIES
from app.core.netguard import BlockedAddress, SsrfGuard, guarded_client
from app.core.notify import listen
from app.webhooks import signing
from app.webhooks.repository import (
    DELIVERY_CHANNEL,
    RESPONSE_BODY_LIMIT,
    ClaimedDelivery,
    WebhookRepository,
)
from app.webhooks.retries import AttemptResult, Decision, Verdict, decide

log = get_logger("pollhook.webhooks")

# Read at most this much of a consumer's answer: enough to keep the first 4 KiB, and a
# consumer cannot make us buffer more.
RESPONSE_READ_LIMIT = 64 * 1024
MAX_BATCH = 100
USER_AGENT = f"pollhook-webhooks/{__version__}"

_STATUS_OF = {
    Verdict.DELIVERED: "succeeded",
    Verdict.RETRY: "pending",
    Verdict.GIVE_UP: "failed",
    Verdict.ENDPOINT_GONE: "failed",
}


def webhook_body(claim: ClaimedDelivery) -> bytes:
    """The same bytes on every attempt: only the timestamp header changes."""
    return json.dumps(
        {
            "type": claim.event_type,
            "timestamp": claim.event_created_at.isoformat(),
            "data": claim.payload,
        },
        separators=(",", ":"),
    ).encode()


def delivery_headers(secrets: list[str], webhook_id: str, body: bytes) -> dict[str, str]:
    """The headers of one attempt: signed now (Standard Webhooks), JSON, our user agent."""
    return {
        **signing.headers(secrets, webhook_id, int(time.time()), body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class DeliveryLoop(LeasedLoop):
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        owner: str,
    ) -> None:
        super().__init__(
            max_in_flight=settings.webhooks.max_in_flight, error_event="delivery_loop_error"
        )
        self.settings = settings.webhooks
        self.sessions = sessions
        self.client = client
        self.owner = owner
        self.rng = random.Random()
        self.tick_s = settings.engine.tick_s
        self.delivered = 0

    @property
    def lease_s(self) -> float:
        # Longer than any attempt can take, so a live replica never loses its claim.
        return max(self.settings.lease_s, 2 * self.settings.timeout_s + 5)

    async def iteration(self) -> None:
        free = self.free
        if free <= 0:
            await self.sleep(self.tick_s)
            return
        async with self.sessions.begin() as session:
            claims = await WebhookRepository(session).claim_due(
                limit=min(free, MAX_BATCH), owner=self.owner, lease_s=self.lease_s
            )
        if not claims:
            await self.sleep(self.tick_s)
            return
        for claim in claims:
            self.start(claim.id, self._deliver(claim))

    async def _deliver(self, claim: ClaimedDelivery) -> None:
        try:
            if not claim.endpoint_enabled:
                await self._record(
                    claim, AttemptResult(None, error="endpoint disabled"), 0, None, count=False
                )
                return
            secrets = claim.secrets or [await self._tenant_secret(claim)]
            started = time.monotonic()
            result, body = await self._send(claim, secrets)
            duration_ms = int((time.monotonic() - started) * 1000)
            await self._record(claim, result, duration_ms, body)
        except Exception as exc:
            # The claim stays until its lease runs out; then the delivery is attempted again.
            log.warning(
                "delivery_failed_unrecorded", delivery_id=str(claim.id), error=type(exc).__name__
            )

    async def _tenant_secret(self, claim: ClaimedDelivery) -> str:
        """A callback for a tenant that never asked for its signing secret: create it now,
        so the consumer can fetch it later and verify."""
        async with self.sessions.begin() as session:
            return await WebhookRepository(session).tenant_secret(
                claim.tenant, signing.generate_secret()
            )

    async def _send(
        self, claim: ClaimedDelivery, secrets: list[str]
    ) -> tuple[AttemptResult, str | None]:
        body = webhook_body(claim)
        headers = delivery_headers(secrets, str(claim.event_id), body)
        timeout = self.settings.timeout_s
        try:
            # The whole exchange is bounded, body included: a consumer that answers one byte
            # at a time cannot hold a worker past the timeout.
            async with asyncio.timeout(timeout):
                request = self.client.build_request(
                    "POST", claim.url, content=body, headers=headers
                )
                response = await self.client.send(request, stream=True, follow_redirects=False)
                try:
                    answer, _ = await read_at_most(response.aiter_raw(), RESPONSE_READ_LIMIT)
                finally:
                    await response.aclose()
        except TimeoutError:
            return AttemptResult(
                None, error=f"no answer within {timeout:g} s", timed_out=True
            ), None
        except BlockedAddress as exc:
            return AttemptResult(None, error=f"refused: {exc}"), None
        except httpx.HTTPError as exc:
            blocked = _blocked_cause(exc)
            if blocked is not None:
                return AttemptResult(None, error=f"refused: {blocked}"), None
            if isinstance(exc, httpx.TimeoutException):
                return AttemptResult(
                    None, error=f"timeout: {type(exc).__name__}", timed_out=True
                ), None
            return AttemptResult(None, error=f"{type(exc).__name__}: {exc}"[:500]), None
        text = answer[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace").replace("\x00", "")
        return (
            AttemptResult(
                response.status_code,
                retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
            ),
            text,
        )

    async def _record(
        self,
        claim: ClaimedDelivery,
        result: AttemptResult,
        duration_ms: int,
        body: str | None,
        *,
        count: bool = True,
    ) -> None:
        if count:
            decision = decide(
                result,
                claim.attempts + 1,
                self.settings.retry_schedule_s,
                self.rng,
                self.settings.overload_floor_s,
            )
        else:  # not an attempt (the endpoint is disabled): nothing to retry
            decision = Decision(Verdict.GIVE_UP)
        status = _STATUS_OF[decision.verdict]
        error = result.error
        if error is None and decision.verdict is not Verdict.DELIVERED:
            error = f"HTTP {result.status_code}"
        async with self.sessions.begin() as session:
            repo = WebhookRepository(session)
            held = await repo.record_attempt(
                claim,
                status=status,
                next_attempt_in_s=decision.delay_s,
                status_code=result.status_code,
                error=error,
                duration_ms=duration_ms,
                response_body=body,
                count_attempt=count,
            )
            if held and count and claim.endpoint_id is not None:
                if decision.verdict is Verdict.DELIVERED:
                    await repo.endpoint_succeeded(claim.endpoint_id)
                elif decision.verdict is Verdict.ENDPOINT_GONE:
                    await repo.disable_endpoint(claim.endpoint_id, "the endpoint answered 410 Gone")
                else:
                    await repo.endpoint_failed(claim.endpoint_id)
        if held and decision.verdict is Verdict.DELIVERED:
            self.delivered += 1
        if count:
            DELIVERIES.labels(decision.verdict.value).inc()
            ATTEMPT_SECONDS.observe(duration_ms / 1000)
        log.info(
            "webhook_attempt",
            delivery_id=str(claim.id),
            webhook_id=str(claim.event_id),
            type=claim.event_type,
            outcome=decision.verdict.value,
            status=result.status_code,
            error=error,
            duration_ms=duration_ms,
        )


def _blocked_cause(exc: BaseException) -> BlockedAddress | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class DeliveryWorker:
    """The delivery loop, its NOTIFY listener and housekeeping, in one process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        owner: str,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = create_sessionmaker(engine)
        self.client = client or guarded_client(
            SsrfGuard(settings.webhook_allow_networks),
            timeout=settings.webhooks.timeout_s,
            # Keep-alive as large as the connection limit: httpcore counts every connection
            # against it, and a smaller one closes and reopens connections (TLS handshakes
            # with real consumers) under load.
            limits=httpx.Limits(
                max_connections=settings.webhooks.max_in_flight,
                max_keepalive_connections=settings.webhooks.max_in_flight,
            ),
        )
        self.loop = DeliveryLoop(settings, self.sessions, self.client, owner)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.loop.run()),
            asyncio.create_task(
                listen(self.engine, DELIVERY_CHANNEL, lambda _: self.loop.wake(), self._stop)
            ),
        ]

    async def tick(self) -> None:
        # async: APScheduler runs plain functions in a thread, where waking an asyncio
        # event is unsafe.
        self.loop.wake()

    async def housekeeping(self) -> None:
        try:
            async with self.sessions.begin() as session:
                disabled = await WebhookRepository(session).disable_failing_endpoints(
                    self.settings.webhooks.disable_after_s
                )
            if disabled:
                log.warning("webhook_endpoints_disabled", count=disabled)
        except Exception as exc:
            log.warning("housekeeping_failed", error=type(exc).__name__)

    async def stop(self) -> None:
        self._stop.set()
        await self.loop.drain(self.settings.engine.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
