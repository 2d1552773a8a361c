"""The poll loop: one per provider instance in every replica.

Each loop claims a batch of due tasks (SKIP LOCKED, lease + fencing token), reserves as
many send slots from the instance's shared budget (`app/budget/pacing.py`), polls each task
at its slot through its adapter, and writes the results that arrived together in one
transaction of set-based statements, each row fenced by its claim's token (`OutcomeWriter`,
`app/polling/service.py`). Nothing here holds task state that is not also in Postgres: a
replica can die at any point and its claims simply expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from sqlalchemy import exc as db_errors
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive.service import ArchiveIntake
from app.budget.capacity import poll_lease_s
from app.budget.pacing import InstanceGate, Pacer, SlotMissed, SlotsWentBy
from app.budget.repository import BudgetRepository, BudgetState
from app.core.config import PollSettings, ProviderSettings
from app.core.logging import get_logger
from app.core.loop import LeasedLoop
from app.core.metrics import DETECTION_GAP_SECONDS, POLLS, TASK_OUTCOMES
from app.core.redaction import Redactor
from app.models import ProviderHealth
from app.polling.claiming import (
    after_missed_slot,
    plan_claim,
    remember_claim_time,
)
from app.polling.outcomes import PollResult
from app.polling.repository import Claim, PollingRepository
from app.polling.service import Applied, PollingService
from app.providers.base import (
    CredentialError,
    PollContext,
    ProviderAdapter,
    ProviderError,
    RateLimited,
    TaskError,
    TransientError,
)
from app.providers.http import HttpUpstream
from app.schedule.forecasts import Forecasts

log = get_logger("pollhook.engine")

# Default pause after a rate-limit answer that names no Retry-After.
DEFAULT_RATE_LIMIT_PAUSE_S = 1.0


class PollLoop(LeasedLoop):
    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        poll_settings: PollSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        owner: str,
        adapter: ProviderAdapter,
        forecasts: Forecasts,
        archive: ArchiveIntake,
    ) -> None:
        self.archive = archive
        super().__init__(
            max_in_flight=poll_settings.max_in_flight, error_event="poll_loop_error", provider=name
        )
        self.name = name
        self.forecasts = forecasts
        self.settings = settings
        self.poll_settings = poll_settings
        self.sessions = sessions
        self.client = client
        self.owner = owner
        self.adapter = adapter
        # What an upstream says goes on into task errors, last_error (shown to every tenant),
        # webhooks and logs: the instance's key is cut out of it before anything else runs.
        self.redactor = Redactor([settings.api_key.get_secret_value() if settings.api_key else ""])
        self.pacer = Pacer(name, settings, poll_settings, sessions, self.stop_event)
        self.rng = random.Random()
        self.semaphore = asyncio.Semaphore(poll_settings.max_in_flight)
        self.writer = OutcomeWriter(self._write)
        # How long a claim takes to land its slots lately (`app/polling/claiming.py`), the
        # lead the loop last planned with, and when the booked queue was to be down to the
        # lead it last waited for.
        self.claim_time_s = 0.0
        self.lead_s = 0.0
        self.lead_ends = math.inf

    @property
    def gate(self) -> InstanceGate:
        return self.pacer.gate

    @property
    def lease_s(self) -> float:
        """Long enough to cover the longest wait for a budget slot plus the request itself:
        a lease that ran out while its task queued for a slot would hand the task to another
        replica and waste the first one's request."""
        return poll_lease_s(self.poll_settings, self.settings)

    async def iteration(self) -> None:
        started = time.monotonic()
        # A claim's time runs from when the booked queue was to be down to the lead (a late
        # wake-up eats into the lead too), or from this look if the loop did not wait for it.
        # Taken once, here: a pause, a full loop or a failed iteration must not leave an old
        # moment behind to be counted as claim time later.
        since = min(started, self.lead_ends)
        self.lead_ends = math.inf
        state = await self._state()
        if state is None:  # paused: the time it waited is not a claim's
            return
        booked = 0.0
        if self.pacer.limited and state.next_slot_at is not None:
            booked = (state.next_slot_at - state.db_now).total_seconds()
        plan = plan_claim(
            rate_per_s=state.effective_rate_per_s if self.pacer.limited else 0.0,
            booked_s=booked,
            claim_time_s=self.claim_time_s,
            free=self.free,
            settings=self.poll_settings,
        )
        if plan.lead_s > 0:
            self.lead_s = plan.lead_s
        if plan.batch == 0:
            # No room, or the replicas have booked the budget beyond the lead: tasks claimed
            # now would only queue (holding leases) behind those slots, and so would the
            # tasks that fall due meanwhile. Come back when the booked queue is down to the
            # lead.
            wait_s = plan.wait_s
            if plan.lead_s > 0:
                # Up to a slot later, at random: replicas that see the same booked queue would
                # otherwise all wake when it reaches the lead, and the one that always wins
                # that race would take every claim. At most half the lead (twice the claim
                # time), so the budget does not run dry meanwhile; the jitter is not counted
                # as claim time.
                slot_s = 1.0 / state.effective_rate_per_s
                wait_s += self.rng.uniform(0.0, min(slot_s, plan.lead_s / 2))
                self.lead_ends = time.monotonic() + wait_s
            await self.sleep(wait_s)
            return
        # Taken before the claim, so the local view of the lease can only end early.
        claimed_at = time.monotonic()
        async with self.sessions.begin() as session:
            claims = await PollingRepository(session).claim_due(
                self.name, limit=plan.batch, owner=self.owner, lease_s=self.lease_s
            )
        if not claims:
            await self._sleep_until_due()
            return
        if self.pacer.limited:
            # Into this replica's queue: each poll takes the next slot when it is ready.
            await self.pacer.reserve(len(claims))
            self.claim_time_s = remember_claim_time(self.claim_time_s, time.monotonic() - since)
        for claim in claims:
            self.start(claim.id, self._poll_one(claim, claimed_at))

    async def _state(self) -> BudgetState | None:
        """The shared state, or None (after waiting a little) while the instance is paused."""
        async with self.sessions.begin() as session:
            repo = BudgetRepository(session)
            configured = {self.name: self.settings}
            state = (
                await repo.states(configured, recovery_s=self.poll_settings.rate_recovery_s)
            ).get(self.name)
            if state is None:  # configured after this replica started: create the row
                await repo.ensure_rows(configured)
                return None
        self.gate.health = state.health
        shared_pause = (
            (state.paused_until - state.db_now).total_seconds() if state.paused_until else 0.0
        )
        pause = max(shared_pause, self.gate.paused_until - time.monotonic())
        if pause > 0:
            await self.sleep(min(pause, 5.0))
            return None
        return state

    async def _poll_one(self, claim: Claim, claimed_at: float) -> None:
        sent = False
        context = PollContext(claim.external_id, claim.checkpoint)
        try:
            async with self.semaphore:
                result = await self._fetch(claim, context, claimed_at)
                sent = result.sent
        except SlotMissed as missed:
            POLLS.labels(self.name, "slot_missed").inc()
            # Only slots that went by say the lead was short; a pause or a lease about to
            # run out says nothing about it.
            if isinstance(missed, SlotsWentBy):
                self.claim_time_s = after_missed_slot(self.claim_time_s, self.lead_s)
            await self._release(claim, context)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._release(claim, context))
            raise
        try:
            applied = await self.writer.apply(claim, result)
        except Exception as exc:
            # The claim stays until its lease runs out; then the task is polled again.
            log.warning(
                "poll_apply_failed",
                provider=self.name,
                task_id=str(claim.id),
                error=type(exc).__name__,
                sent=sent,
            )
            return
        POLLS.labels(self.name, _outcome(result, applied)).inc()
        if applied is None:
            log.info("poll_result_fenced_off", provider=self.name, task_id=str(claim.id))
        elif applied.changed:
            if applied.status.is_terminal:
                TASK_OUTCOMES.labels(self.name, applied.status.value).inc()
            if applied.detection_gap_s is not None:
                DETECTION_GAP_SECONDS.labels(self.name).observe(applied.detection_gap_s)
            log.info(
                "task_status_changed",
                provider=self.name,
                task_id=applied.task_id,
                status=applied.status.value,
            )

    async def drain(self, grace_s: float) -> None:
        await super().drain(grace_s)
        await self.writer.close()

    async def _write(self, results: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        async with self.sessions.begin() as session:
            service = PollingService(
                session,
                self.settings,
                auth_retry_s=self.poll_settings.auth_retry_s,
                rng=self.rng,
                forecasts=self.forecasts,
                archive=self.archive,
            )
            return await service.apply_all(results)

    async def _fetch(self, claim: Claim, context: PollContext, claimed_at: float) -> PollResult:
        """Poll through the adapter; every way the poll ends carries the checkpoint the
        adapter left in `context`, so a retry resumes where this one got to."""
        if self.settings.api_key is None:
            # Every request would be refused: none is sent, and the task shows why it waits.
            missing = CredentialError(
                f"no API key is configured: set POLLHOOK_PROVIDERS__{self.name.upper()}__API_KEY",
                code="missing_key",
            )
            if self.gate.health is not ProviderHealth.AUTH_FAILED:
                await self._on_credential_error(missing)
            return PollResult(error=missing, sent=False, checkpoint=context.checkpoint)
        acquire = self.pacer.slots(lease_ends=claimed_at + self.lease_s)
        upstream = HttpUpstream(
            self.client, self.settings, acquire, acquire.before_send, self.adapter.auth_headers
        )

        def failed(error: ProviderError) -> PollResult:
            # Read when the poll has ended: what was sent, and how far the adapter got.
            return PollResult(error=error, sent=acquire.sent, checkpoint=context.checkpoint)

        try:
            outcome = (await self.adapter.poll(upstream, context)).redacted(self.redactor)
        except SlotMissed:
            if acquire.sent:
                # A follow-up request (file retrieve) missed its slot: retry the task soon.
                return PollResult(
                    error=TransientError("budget slot missed", code="slot_missed"),
                    checkpoint=context.checkpoint,
                )
            raise
        except ProviderError as exc:
            exc.redact(self.redactor)
            if isinstance(exc, RateLimited):
                await self._on_rate_limited(exc)
            elif isinstance(exc, CredentialError):
                await self._on_credential_error(exc)
            return failed(error=exc)
        except Exception as exc:
            # An adapter bug must not kill the loop or lose the task: record it as transient.
            log.exception("adapter_error", provider=self.name, task_id=str(claim.id))
            return failed(
                error=TransientError(
                    f"internal adapter error: {type(exc).__name__}", code="internal"
                )
            )
        if self.gate.health is not ProviderHealth.OK:
            await self._mark_healthy()
        return PollResult(outcome=outcome, sent=True, checkpoint=context.checkpoint)

    async def _on_rate_limited(self, exc: RateLimited) -> None:
        pause = max(0.5, exc.retry_after_s or DEFAULT_RATE_LIMIT_PAUSE_S)
        self.gate.pause(pause)
        log.warning("provider_rate_limited", provider=self.name, code=exc.code, pause_s=pause)
        self.gate.health = ProviderHealth.DEGRADED
        async with self._shared_state_write("record_rate_limited") as repo:
            await repo.record_rate_limited(
                self.name,
                configured_rate=self.settings.rate_limit_per_s or 1.0,
                recovery_s=self.poll_settings.rate_recovery_s,
                pause_s=pause,
                message=f"rate limited ({exc.code}): {exc.message}",
            )

    async def _on_credential_error(self, exc: CredentialError) -> None:
        retry = self.poll_settings.auth_retry_s
        self.gate.pause(retry)
        self.gate.health = ProviderHealth.AUTH_FAILED
        log.error("provider_auth_failed", provider=self.name, code=exc.code, retry_s=retry)
        async with self._shared_state_write("record_auth_failed") as repo:
            await repo.record_auth_failed(
                self.name, retry_s=retry, message=f"credential error ({exc.code}): {exc.message}"
            )

    async def _mark_healthy(self) -> None:
        async with self._shared_state_write("record_healthy") as repo:
            await repo.record_healthy(self.name)
            self.gate.health = ProviderHealth.OK

    @contextlib.asynccontextmanager
    async def _shared_state_write(self, what: str) -> AsyncIterator[BudgetRepository]:
        """Tell the other replicas about the instance's health, best effort: this replica's
        gate already holds the news, and a database that is down right now must not turn
        the poll's own result into an unhandled error (its claim would sit out the lease)."""
        try:
            async with self.sessions.begin() as session:
                yield BudgetRepository(session)
        except Exception as exc:
            log.warning(
                "provider_state_write_failed",
                provider=self.name,
                what=what,
                error=type(exc).__name__,
            )

    async def _release(self, claim: Claim, context: PollContext) -> None:
        """Give a claim back without a result to apply, keeping whatever progress its poll
        recorded before it stopped."""
        try:
            async with self.sessions.begin() as session:
                repo = PollingRepository(session)
                if context.checkpoint != claim.checkpoint:
                    await repo.save_checkpoint(claim, context.checkpoint)
                await repo.release([claim])
        except Exception as exc:  # the lease expires on its own; nothing is lost
            log.warning("release_failed", provider=self.name, error=type(exc).__name__)

    async def _sleep_until_due(self) -> None:
        async with self.sessions.begin() as session:
            until_due = await PollingRepository(session).seconds_until_due(self.name)
        wait = self.poll_settings.tick_s * 5
        if until_due is not None:
            wait = min(wait, max(0.0, until_due))
        await self.sleep(wait)


# Errors that say the database cannot be reached now, rather than that it refused a row.
_DATABASE_AWAY = (
    db_errors.OperationalError,
    db_errors.InterfaceError,
    db_errors.TimeoutError,  # no pooled connection came free
    OSError,
    TimeoutError,
)

Write = Callable[[list[tuple[Claim, PollResult]]], Awaitable[list[Applied | None]]]


class OutcomeWriter:
    """Group commit of poll results: every result that arrives while a write is in flight
    goes into the next one, so one transaction of set-based statements carries as many
    results as came in meanwhile, and a quiet instance still writes each one at once.

    A batch that fails is written again one result at a time, so one result the database
    refuses cannot hold back the others; its own poll sees the error."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending: list[tuple[Claim, PollResult, asyncio.Future[Applied | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def apply(self, claim: Claim, result: PollResult) -> Applied | None:
        future: asyncio.Future[Applied | None] = asyncio.get_running_loop().create_future()
        self._pending.append((claim, result, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a poll cancelled now (shutdown) leaves its result to the write under way.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for the write under way (a stopping loop's polls may have been cancelled
        while their results waited in it)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        batch: list[tuple[Claim, PollResult, asyncio.Future[Applied | None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    _settle(batch, await self._write([(c, r) for c, r, _ in batch]))
                except _DATABASE_AWAY as exc:
                    # The database is away, not refusing a row: one at a time would only
                    # wait out a timeout per result.
                    _fail(batch, exc)
                except Exception as exc:
                    if len(batch) == 1:
                        _fail(batch, exc)
                        continue
                    for item in batch:
                        try:
                            _settle([item], await self._write([item[:2]]))
                        except Exception as single:
                            _fail([item], single)
        except BaseException as exc:  # cancelled: no future is left waiting forever
            _fail(batch + self._pending, RuntimeError(f"write interrupted: {exc!r}"))
            self._pending = []
            raise


def _settle(
    batch: list[tuple[Claim, PollResult, asyncio.Future[Applied | None]]],
    applied: list[Applied | None],
) -> None:
    for (_, _, future), one in zip(batch, applied, strict=True):
        if not future.done():
            future.set_result(one)


def _fail(
    batch: list[tuple[Claim, PollResult, asyncio.Future[Applied | None]]], exc: Exception
) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
            # Marked as seen: a poll cancelled meanwhile no longer awaits it, and a poll
            # that does gets it raised all the same (and logs it).
            future.exception()


def _outcome(result: PollResult, applied: Applied | None) -> str:
    if applied is None:
        return "fenced_off"
    if result.error is not None:
        # isinstance, not type(): subclasses (RequestRefused is a TaskError) count as their kind.
        for kind, label in (
            (RateLimited, "rate_limited"),
            (CredentialError, "credential_error"),
            (TaskError, "task_error"),
        ):
            if isinstance(result.error, kind):
                return label
        return "transient_error"
    return "changed" if applied.changed else "unchanged"
