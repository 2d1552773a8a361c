"""The delivery loop: sends the outbox's deliveries, signed, and records every attempt.

Deliveries are rows written in the transaction of their event, so nothing is lost if a
process dies: a claimed delivery falls due again when its lease runs out, with the same
event and so the same webhook-id. A trigger's NOTIFY sends a new delivery right after its
event commits; the tick carries retries and anything a crash left behind.

Set-based, close to the wire: one statement claims a batch with everything its sends need
(event, URL, secrets); each claimed delivery is sent at once, at most
`per_endpoint_in_flight` to one endpoint, over the guarded client's kept-alive connections;
finished attempts are written a few ms later in bulk, one statement per batch, each fenced
by its claim's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import __version__
from app.blobs.views import ArchiveLinks
from app.core.config import Settings
from app.core.db import StatementConnection, create_engine, create_sessionmaker
from app.core.http_client import read_at_most, retry_after_seconds
from app.core.logging import get_logger
from app.core.loop import LeasedLoop
from app.core.metrics import ATTEMPT_SECONDS, DELIVERIES, DELIVERY_LATENCY_SECONDS
from app.core.netguard import BlockedAddress, SsrfGuard, guarded_client, refusal_in
from app.core.notify import Woken
from app.webhooks import signing
from app.webhooks.repository import (
    DELIVERY_CHANNEL,
    RESPONSE_BODY_LIMIT,
    AttemptRecord,
    ClaimedDelivery,
    WebhookRepository,
)
from app.webhooks.retries import AttemptResult, Decision, Verdict, decide

log = get_logger("pollhook.webhooks")

# Read at most this much of a consumer's answer: enough to keep the first 4 KiB, and a
# consumer cannot make us buffer more.
RESPONSE_READ_LIMIT = 64 * 1024
MAX_BATCH = 100
# Finished attempts are written FLUSH_AT at a time, or once the oldest has waited
# FLUSH_AFTER_S: a few ms add nothing a consumer notices (it has its answer already) and
# turn a busy loop's writes into one statement per batch.
FLUSH_AT = 64
FLUSH_AFTER_S = 0.005
USER_AGENT = f"pollhook-webhooks/{__version__}"

_STATUS_OF = {
    Verdict.DELIVERED: "succeeded",
    Verdict.RETRY: "pending",
    Verdict.GIVE_UP: "failed",
    Verdict.ENDPOINT_GONE: "failed",
}


def webhook_body(claim: ClaimedDelivery, data: dict[str, Any]) -> bytes:
    """The event with `data`, the task's snapshot as this attempt shows it: the same on
    every attempt but for the archive, shown as it stands with links minted for the
    attempt (`ArchiveLinks.into_snapshot`)."""
    return json.dumps(
        {
            "type": claim.event_type,
            "timestamp": claim.event_created_at.isoformat(),
            "data": data,
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


@dataclass(frozen=True)
class Outcome:
    """One finished attempt: what is written, and what is counted and logged once it is."""

    claim: ClaimedDelivery
    record: AttemptRecord
    # This process's wall clock when the answer came in (None: nothing was sent).
    answered_at: datetime | None = None

    @classmethod
    def of(
        cls,
        claim: ClaimedDelivery,
        result: AttemptResult,
        decision: Decision,
        *,
        duration_ms: int,
        body: str | None,
        counted: bool,
        answered_at: datetime | None = None,
    ) -> Outcome:
        error = result.error
        if error is None and decision.verdict is not Verdict.DELIVERED:
            error = f"HTTP {result.status_code}"
        return cls(
            claim,
            AttemptRecord(
                delivery_id=claim.id,
                token=claim.token,
                status=_STATUS_OF[decision.verdict],
                next_attempt_in_s=decision.delay_s,
                status_code=result.status_code,
                error=error,
                duration_ms=duration_ms,
                response_body=body,
                counted=counted,
                verdict=decision.verdict.value,
            ),
            answered_at,
        )

    def report(self, recorded: bool) -> None:
        """Metrics and the log line, once written (`recorded`: the claim still held)."""
        record = self.record
        if record.counted:
            DELIVERIES.labels(record.verdict).inc()
            ATTEMPT_SECONDS.observe(record.duration_ms / 1000)
            if record.verdict == Verdict.DELIVERED and self.answered_at is not None:
                # The event's stamp is the database's clock, this one the process's: a
                # clock behind the database's must not read as a negative latency.
                latency = self.answered_at - self.claim.event_created_at
                DELIVERY_LATENCY_SECONDS.observe(max(0.0, latency.total_seconds()))
        log.info(
            "webhook_attempt",
            delivery_id=str(self.claim.id),
            webhook_id=str(self.claim.event_id),
            type=self.claim.event_type,
            outcome=record.verdict,
            status=record.status_code,
            error=record.error,
            duration_ms=record.duration_ms,
            recorded=recorded,
        )


class AttemptRecorder:
    """Writes finished attempts in bulk, soon after they finish.

    A batch is written when FLUSH_AT attempts have finished or the oldest has waited
    FLUSH_AFTER_S, whichever comes first, in one transaction (`record_attempts`): a slow
    consumer does not hold back the record of the fast ones, and a busy loop writes one
    statement for many attempts. While a batch is being written the next one gathers.
    """

    def __init__(self, connection: StatementConnection) -> None:
        self.connection = connection
        self.waiting: list[tuple[AttemptRecord, asyncio.Future[bool]]] = []
        self.oldest = 0.0
        self.full = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None

    async def record(self, record: AttemptRecord) -> bool:
        """Once written: whether the claim still held (False: a late answer, dropped)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self.waiting:
            self.oldest = time.monotonic()
        self.waiting.append((record, future))
        if len(self.waiting) >= FLUSH_AT:
            self.full.set()
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write_until_empty())
        return await future

    async def _write_until_empty(self) -> None:
        while self.waiting:
            wait_s = FLUSH_AFTER_S - (time.monotonic() - self.oldest)
            if len(self.waiting) < FLUSH_AT and wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.full.wait(), wait_s)
            batch, self.waiting = self.waiting, []
            self.full.clear()
            try:
                async with self.connection.session() as session:
                    held = await WebhookRepository(session).record_attempts(
                        [record for record, _ in batch]
                    )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for record, future in batch:
                if not future.done():
                    future.set_result((record.delivery_id, record.token) in held)

    async def close(self) -> None:
        """Finish the batch being written (each attempt's task awaits its own record, so
        after the loop's drain this is at most the last batch)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer, FLUSH_AFTER_S + 5.0)
        await self.connection.close()


class DeliveryLoop(LeasedLoop):
    """Claims due deliveries in batches, sends them concurrently (at most
    `per_endpoint_in_flight` at once to one endpoint), and records what finished through the
    AttemptRecorder."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        owner: str,
        links: ArchiveLinks,
    ) -> None:
        super().__init__(
            max_in_flight=settings.webhooks.max_in_flight, error_event="delivery_loop_error"
        )
        self.links = links
        self.settings = settings.webhooks
        self.sessions = sessions
        self.client = client
        self.owner = owner
        self.rng = random.Random()
        self.tick_s = settings.engine.tick_s
        self.per_key = settings.webhooks.per_endpoint_in_flight
        # Limit key -> deliveries claimed and not sent yet. Up to two rounds per key: one on
        # the wire, the next claimed behind it, so the claim's commit does not leave the
        # endpoint idle. Both rounds fit in the lease (2 x timeout + 5 s).
        self.held: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Semaphore] = {}
        # The claim and the record are one statement each, on connections of their own. A
        # claim lost in a server crash only sends its delivery again, so its commit does
        # not wait for the disk: its connection comes from a pool of one made that way. A
        # record's commit does wait (a lost one would send it again too, but the delivered
        # state is what the API shows).
        self.claim_engine = create_engine(engine.url, pool_size=1, durable=False)
        self.claims = StatementConnection(self.claim_engine)
        self.recorder = AttemptRecorder(StatementConnection(engine))
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
        asked = min(free, MAX_BATCH)
        async with self.claims.session() as session:
            claims = await WebhookRepository(session).claim_due(
                limit=asked,
                owner=self.owner,
                lease_s=self.lease_s,
                per_key=2 * self.per_key,
                held=self.held,
            )
        for claim in claims:
            self.held[claim.limit_key] += 1
            self.start(claim.id, self._deliver(claim))
        if len(claims) < asked:
            # Nothing more is due, or only for endpoints at their limit: wait for a wake-up
            # (NOTIFY, an endpoint back under its limit, room in flight) or the tick.
            await self.sleep(self.tick_s)

    async def _deliver(self, claim: ClaimedDelivery) -> None:
        key = claim.limit_key
        try:
            try:
                gate = self.gates.setdefault(key, asyncio.Semaphore(self.per_key))
                async with gate:
                    outcome = await self._attempt(claim)
            finally:
                self._sent(key)
            recorded = await self.recorder.record(outcome.record)
        except Exception as exc:
            # The claim stays until its lease runs out; then the delivery is attempted again.
            log.warning(
                "delivery_failed_unrecorded", delivery_id=str(claim.id), error=type(exc).__name__
            )
            return
        outcome.report(recorded)
        if recorded and outcome.record.verdict == Verdict.DELIVERED:
            self.delivered += 1

    def _sent(self, key: str) -> None:
        left = self.held[key] - 1
        if left <= 0:
            # Nothing of this key waits at its gate any more.
            del self.held[key]
            del self.gates[key]
        else:
            self.held[key] = left
        if left == self.per_key:
            self.wake()  # room for the endpoint's next round: don't wait for the tick

    async def _attempt(self, claim: ClaimedDelivery) -> Outcome:
        if not claim.endpoint_enabled:
            # Not an attempt: nothing is sent and there is nothing to retry.
            return Outcome.of(
                claim,
                AttemptResult(None, error="endpoint disabled"),
                Decision(Verdict.GIVE_UP),
                duration_ms=0,
                body=None,
                counted=False,
            )
        secrets = claim.secrets or [await self._tenant_secret(claim)]
        started = time.monotonic()
        result, body = await self._send(claim, secrets)
        duration_ms = int((time.monotonic() - started) * 1000)
        answered_at = datetime.now(UTC)
        decision = decide(
            result,
            claim.attempts + 1,
            self.settings.retry_schedule_s,
            self.rng,
            self.settings.overload_floor_s,
        )
        return Outcome.of(
            claim,
            result,
            decision,
            duration_ms=duration_ms,
            body=body,
            counted=True,
            answered_at=answered_at,
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
        data = await self.links.into_snapshot(claim.payload, claim.task_archive, datetime.now(UTC))
        body = webhook_body(claim, data)
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
            blocked = refusal_in(exc, BlockedAddress)
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


class DeliveryWorker:
    """The delivery loop, its NOTIFY listener and housekeeping, in one process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        owner: str,
        links: ArchiveLinks,
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
        self.loop = DeliveryLoop(settings, engine, self.sessions, self.client, owner, links)
        self.running = Woken(self.loop, engine, DELIVERY_CHANNEL)

    def start(self) -> None:
        self.running.start()

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
        try:
            await self.running.drain(self.settings.engine.shutdown_grace_s)
            await self.loop.recorder.close()
        finally:
            # Whatever the last records did, the connections, the tasks and the client go.
            await self.loop.claims.close()
            await self.loop.claim_engine.dispose()
            await self.running.end()
            await self.client.aclose()
