"""The poll engine: one loop per provider instance in every replica.

Each loop claims a batch of due tasks (SKIP LOCKED, lease + fencing token), reserves as
many send slots from the instance's shared budget, polls each task at its slot, and applies
every result in its own fenced transaction. APScheduler ticks the loops (the fallback);
LISTEN/NOTIFY on new registrations wakes them at once. Nothing here holds task state that
is not also in Postgres: a replica can die at any point and its claims simply expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import EngineSettings, ProviderSettings, Settings
from app.core.db import create_sessionmaker
from app.core.logging import get_logger
from app.core.metrics import BUDGET_SLOTS, POLLS, TASK_OUTCOMES
from app.core.notify import listen
from app.core.redaction import Redactor
from app.models import ProviderHealth
from app.polling import policy
from app.polling.forecasts import Forecasts
from app.polling.repository import Claim, CompletionRepository, PollingRepository
from app.polling.service import Applied, PollingService, PollResult
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
from app.providers.registry import adapter_for
from app.providers.repository import (
    SEND_SLACK_S,
    SPACING_FACTOR,
    InstanceState,
    ProviderStateRepository,
    Reservation,
)
from app.tasks.repository import NOTIFY_CHANNEL

log = get_logger("pollhook.engine")

# After an unexpected failure of the loop itself (database down, ...), wait this long, doubling.
LOOP_ERROR_BACKOFF_S = (0.5, 30.0)
# Default pause after a rate-limit answer that names no Retry-After.
DEFAULT_RATE_LIMIT_PAUSE_S = 1.0


class SlotMissed(Exception):
    """The send slot passed (or the instance paused) before the request could go out."""


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class LocalSlots:
    """A reservation placed on this process's monotonic clock.

    The anchor is the moment the reservation's answer arrived, which is at or after the
    database clock's `db_now`: slots can only land late here, never early.
    """

    reservation: Reservation
    anchor: float

    def at(self, index: int) -> float:
        offset = (self.reservation.first_slot - self.reservation.db_now).total_seconds()
        return self.anchor + offset + index * self.reservation.spacing_s


@dataclass
class InstanceGate:
    """Per-replica view of the instance: paused locally the moment a rate-limit or
    credential answer arrives, before the shared row says so to the other replicas."""

    paused_until: float = 0.0
    health: ProviderHealth = ProviderHealth.OK
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class SlotSource:
    """Budget slots for one poll: the pre-reserved one, then a freshly reserved slot for
    each further request (MiniMax's file retrieve). `sent` tells whether any request left."""

    def __init__(self, loop: ProviderLoop, first: float | None, lease_ends: float) -> None:
        self.loop = loop
        self.pending = [first] if first is not None else []
        self.current: float | None = None
        self.lease_ends = lease_ends
        self.sent = False

    async def __call__(self) -> None:
        """Wait for the next request's slot."""
        if self.loop.limited:
            if self.pending:
                self.current = self.pending.pop()
            else:
                try:
                    self.current = (await self.loop.reserve(1)).at(0)
                except Exception as exc:
                    # The database went away under a follow-up request (file retrieve): a
                    # missed slot, retried with the task, not an adapter error.
                    raise SlotMissed(f"no budget slot: {type(exc).__name__}") from exc
            await self.loop.wait_for_slot(self.current)
        elif self.loop.gate.stop.is_set():
            raise SlotMissed("stopping")

    def before_send(self) -> None:
        """Right before the bytes go out: still within the slot's slack, or abort unsent.

        Checking here rather than when the wait ends keeps connection setup out of the
        lateness: a request that waited 50 ms for a fresh connection would otherwise reach
        the upstream bunched up with the ones behind it on warm connections."""
        if self.current is not None:
            self.loop.check_slot(self.current)
        # An answer that arrives after the lease ran out is fenced off anyway: do not spend
        # a budget slot (and the upstream's patience) on it.
        if time.monotonic() + self.loop.settings.request_timeout_s > self.lease_ends:
            raise SlotMissed("the claim's lease would run out before the answer")
        self.sent = True


class ProviderLoop:
    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        engine_settings: EngineSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        owner: str,
        adapter: ProviderAdapter | None = None,
        forecasts: Forecasts | None = None,
    ) -> None:
        self.name = name
        self.forecasts = forecasts or Forecasts(ttl_s=engine_settings.model_refresh_s)
        self.settings = settings
        self.engine_settings = engine_settings
        self.sessions = sessions
        self.client = client
        self.owner = owner
        self.adapter = adapter or adapter_for(settings.kind)
        # What an upstream says goes on into task errors, last_error (shown to every tenant),
        # webhooks and logs: the instance's key is cut out of it before anything else runs.
        self.redactor = Redactor([settings.api_key.get_secret_value() if settings.api_key else ""])
        self.gate = InstanceGate()
        self.wake_event = asyncio.Event()
        self.rng = random.Random()
        self.in_flight: dict[uuid.UUID, tuple[Claim, asyncio.Task[None]]] = {}
        self.semaphore = asyncio.Semaphore(engine_settings.max_in_flight)

    @property
    def limited(self) -> bool:
        return self.settings.rate_limit_per_s > 0

    def wake(self) -> None:
        self.wake_event.set()

    async def run(self) -> None:
        backoff = LOOP_ERROR_BACKOFF_S[0]
        while not self.gate.stop.is_set():
            try:
                await self._iteration()
                backoff = LOOP_ERROR_BACKOFF_S[0]
            except Exception as exc:
                log.warning(
                    "poll_loop_error",
                    provider=self.name,
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                )
                # Not self._sleep: the tick sets the wake event every tick_s, which cut this
                # backoff short and retried a dead database every tick (tests/e2e/test_outages).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.gate.stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, LOOP_ERROR_BACKOFF_S[1])

    @property
    def lease_s(self) -> float:
        """Long enough to cover the longest wait for a budget slot plus the request itself:
        a lease that ran out while its task queued for a slot would hand the task to another
        replica and waste the first one's request."""
        horizon = self.engine_settings.claim_horizon_s
        return max(self.engine_settings.lease_s, 2 * horizon + self.settings.request_timeout_s + 1)

    async def _iteration(self) -> None:
        state = await self._state()
        if state is None:
            return
        free = self.engine_settings.max_in_flight - len(self.in_flight)
        if free <= 0:
            await self._sleep(self.engine_settings.tick_s)
            return
        rate = state.effective_rate_per_s if self.limited else 0.0
        if self.limited and state.next_slot_at is not None:
            # The replicas together have booked the budget this far ahead: claiming more now
            # would only make tasks queue (holding leases) for slots. Come back when the
            # booked queue is down to one horizon.
            booked = (state.next_slot_at - state.db_now).total_seconds()
            excess = booked - self.engine_settings.claim_horizon_s
            if excess > 0:
                await self._sleep(excess)
                return
        batch = self._batch_size(rate, free)
        # Taken before the claim, so the local view of the lease can only end early.
        claimed_at = time.monotonic()
        async with self.sessions.begin() as session:
            claims = await PollingRepository(session).claim_due(
                self.name, limit=batch, owner=self.owner, lease_s=self.lease_s
            )
        if not claims:
            await self._sleep_until_due()
            return
        slots = await self.reserve(len(claims)) if self.limited else None
        for index, claim in enumerate(claims):
            slot_at = slots.at(index) if slots else None
            task = asyncio.create_task(self._poll_one(claim, slot_at, claimed_at))
            self.in_flight[claim.id] = (claim, task)
            task.add_done_callback(partial(self._forget, claim.id))

    def _forget(self, task_id: uuid.UUID, _: asyncio.Task[None]) -> None:
        self.in_flight.pop(task_id, None)
        if len(self.in_flight) == self.engine_settings.max_in_flight // 2:
            self.wake()  # room for another batch: don't wait for the next tick

    def _batch_size(self, rate: float, free: int) -> int:
        if rate <= 0:
            return max(1, min(free, self.engine_settings.max_batch))
        horizon = max(1, int(rate * self.engine_settings.claim_horizon_s))
        return max(1, min(free, horizon, self.engine_settings.max_batch))

    async def _state(self) -> InstanceState | None:
        """The shared state, or None (after waiting a little) while the instance is paused."""
        async with self.sessions.begin() as session:
            repo = ProviderStateRepository(session)
            configured = {self.name: self.settings}
            state = (
                await repo.states(configured, recovery_s=self.engine_settings.rate_recovery_s)
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
            await self._sleep(min(pause, 5.0))
            return None
        return state

    async def reserve(self, count: int) -> LocalSlots:
        BUDGET_SLOTS.labels(self.name).inc(count)
        async with self.sessions.begin() as session:
            reservation = await ProviderStateRepository(session).reserve(
                self.name,
                count,
                configured_rate=self.settings.rate_limit_per_s,
                recovery_s=self.engine_settings.rate_recovery_s,
            )
            # Placed as the answer arrives, before the COMMIT: the slots land late by the
            # answer's trip only. After the commit they also landed late by its fsync, by a
            # different amount per reservation, and two replicas' slots bunched up by the
            # difference (seen: 11 requests in one second at 10/s under I/O load).
            anchor = time.monotonic()
        return LocalSlots(reservation, anchor=anchor)

    async def wait_for_slot(self, slot_at: float) -> None:
        while (delay := slot_at - time.monotonic()) > 0:
            if self.gate.stop.is_set():
                raise SlotMissed("stopping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.stop.wait(), timeout=delay)
        self.check_slot(slot_at)

    def check_slot(self, slot_at: float) -> None:
        if self.gate.stop.is_set():
            raise SlotMissed("stopping")
        if time.monotonic() - slot_at > SEND_SLACK_S:
            raise SlotMissed("late for the slot")
        if self.gate.paused_until > time.monotonic():
            raise SlotMissed("instance paused")

    async def _poll_one(self, claim: Claim, slot_at: float | None, claimed_at: float) -> None:
        sent = False
        context = PollContext(claim.external_id, claim.checkpoint)
        try:
            async with self.semaphore:
                result = await self._fetch(claim, context, slot_at, claimed_at)
                sent = result.sent
        except SlotMissed:
            POLLS.labels(self.name, "slot_missed").inc()
            await self._release(claim, context)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._release(claim, context))
            raise
        try:
            async with self.sessions.begin() as session:
                service = PollingService(
                    session,
                    self.settings,
                    auth_retry_s=self.engine_settings.auth_retry_s,
                    rng=self.rng,
                    forecasts=self.forecasts,
                )
                applied = await service.apply(claim, result)
            POLLS.labels(self.name, _outcome(result, applied)).inc()
            if applied is not None and applied.changed and applied.status.is_terminal:
                TASK_OUTCOMES.labels(self.name, applied.status.value).inc()
            if applied is None:
                log.info("poll_result_fenced_off", provider=self.name, task_id=str(claim.id))
            elif applied.changed:
                log.info(
                    "task_status_changed",
                    provider=self.name,
                    task_id=applied.task_id,
                    status=applied.status.value,
                )
        except Exception as exc:
            # The claim stays until its lease runs out; then the task is polled again.
            log.warning(
                "poll_apply_failed",
                provider=self.name,
                task_id=str(claim.id),
                error=type(exc).__name__,
                sent=sent,
            )

    async def _fetch(
        self, claim: Claim, context: PollContext, slot_at: float | None, claimed_at: float
    ) -> PollResult:
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
        acquire = SlotSource(self, slot_at, lease_ends=claimed_at + self.lease_s)
        upstream = HttpUpstream(self.client, self.settings, acquire, acquire.before_send)

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
                recovery_s=self.engine_settings.rate_recovery_s,
                pause_s=pause,
                message=f"rate limited ({exc.code}): {exc.message}",
            )

    async def _on_credential_error(self, exc: CredentialError) -> None:
        retry = self.engine_settings.auth_retry_s
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
    async def _shared_state_write(self, what: str) -> AsyncIterator[ProviderStateRepository]:
        """Tell the other replicas about the instance's health, best effort: this replica's
        gate already holds the news, and a database that is down right now must not turn
        the poll's own result into an unhandled error (its claim would sit out the lease)."""
        try:
            async with self.sessions.begin() as session:
                yield ProviderStateRepository(session)
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
        wait = self.engine_settings.tick_s * 5
        if until_due is not None:
            wait = min(wait, max(0.0, until_due))
        await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (tick, NOTIFY), stopped, or `seconds` have passed."""
        if seconds <= 0 or self.gate.stop.is_set():
            return
        self.wake_event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake_event.wait(), timeout=seconds)

    async def drain(self, grace_s: float) -> None:
        """Stop claiming; give in-flight requests `grace_s`, then release what is left."""
        self.gate.stop.set()
        self.wake()
        tasks = [task for _, task in self.in_flight.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class PollEngine:
    """Everything the engine runs in one process: a loop per instance, the NOTIFY
    listener and the APScheduler ticker."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        scheduler: AsyncIOScheduler | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = create_sessionmaker(engine)
        self.owner = replica_id()
        limits = httpx.Limits(
            max_connections=settings.engine.max_in_flight * max(1, len(settings.providers)),
            # As many idle connections as can be busy: fewer means closing and reopening
            # connections under load.
            max_keepalive_connections=settings.engine.max_in_flight
            * max(1, len(settings.providers)),
        )
        self.client = httpx.AsyncClient(limits=limits, follow_redirects=False, transport=transport)
        self.forecasts = Forecasts(ttl_s=settings.engine.model_refresh_s)
        self.loops = {
            name: ProviderLoop(
                name,
                provider,
                settings.engine,
                self.sessions,
                self.client,
                self.owner,
                forecasts=self.forecasts,
            )
            for name, provider in settings.providers.items()
        }
        # Shared with the delivery engine in a worker; its own when run alone (tests).
        self._owns_scheduler = scheduler is None
        self.scheduler = scheduler or AsyncIOScheduler()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener_stop = asyncio.Event()

    async def start(self) -> None:
        async with self.sessions.begin() as session:
            rekeyed = await ProviderStateRepository(session).ensure_rows(self.settings.providers)
            resumed = await PollingRepository(session).resume_parked(rekeyed)
        if rekeyed:
            log.info("provider_key_changed", providers=rekeyed, tasks_resumed=resumed)
        await self.refresh_forecasts()
        self.scheduler.add_job(
            self.refresh_forecasts,
            "interval",
            seconds=self.settings.engine.model_refresh_s,
            max_instances=1,
            coalesce=True,
            id="poll-forecast",
        )
        self.scheduler.add_job(
            self._tick,
            "interval",
            seconds=self.settings.engine.tick_s,
            max_instances=1,
            coalesce=True,
            id="poll-tick",
        )
        if self._owns_scheduler:
            self.scheduler.start()
        self._tasks = [asyncio.create_task(loop.run()) for loop in self.loops.values()]
        self._tasks.append(
            asyncio.create_task(
                listen(self.engine, NOTIFY_CHANNEL, self._on_notify, self._listener_stop)
            )
        )
        log.info("engine_started", owner=self.owner, providers=sorted(self.loops))

    async def refresh_forecasts(self) -> None:
        """Relearn the completion models and forecast each instance's demand (one replica
        per period does it for all), then reload this process's copy.

        The two parts fail apart: a refresh that fails (a slow database at scale, say)
        must not also freeze this process's copy at its last hit chance."""
        try:
            async with self.sessions.begin() as session:
                completions = CompletionRepository(session)
                # The lock keeps two replicas from running at once; the freshness check
                # keeps N replicas from each running it once per period.
                if await completions.try_lead(
                    "pollhook:forecast"
                ) and not await ProviderStateRepository(session).forecast_is_fresh(
                    self.settings.engine.model_refresh_s / 2
                ):
                    await completions.refresh_profiles(
                        window=policy.SAMPLE_WINDOW, all_sizes=policy.ALL_SIZES
                    )
                    await completions.prune_samples(window=policy.SAMPLE_WINDOW)
                    # Plan with the models just learned, not this process's older copy.
                    learned = Forecasts(ttl_s=0)
                    learned.load(await completions.profiles(), {}, time.monotonic())
                    await self._forecast_demand(
                        ProviderStateRepository(session),
                        await completions.recent_completions_per_s(
                            self.settings.engine.forecast_window_s, kept=policy.SAMPLE_WINDOW
                        ),
                        learned,
                    )
        except Exception as exc:  # the previous forecast stays in force
            log.warning("forecast_refresh_failed", error=type(exc).__name__, detail=str(exc)[:300])
        try:
            async with self.sessions.begin() as session:
                await self.forecasts.reload(session)
        except Exception as exc:
            log.warning("forecast_reload_failed", error=type(exc).__name__, detail=str(exc)[:300])

    async def _forecast_demand(
        self,
        states: ProviderStateRepository,
        completions_per_s: dict[str, dict[int | None, float]],
        learned: Forecasts,
    ) -> None:
        planned = await states.planned_intervals()
        overdue = await states.due_backlog()
        current = await states.states(
            self.settings.providers, recovery_s=self.settings.engine.rate_recovery_s
        )
        for name, provider in self.settings.providers.items():
            state = current.get(name)
            rate = (
                (state.effective_rate_per_s if state else provider.rate_limit_per_s)
                if provider.rate_limit_per_s > 0
                else 0.0
            )
            classes = completions_per_s.get(name, {})
            intervals = planned.get(name, [])
            active = sum(n for _, n in intervals)
            capacity = policy.poll_capacity(
                rate,
                spacing_factor=SPACING_FACTOR,
                follow_ups_per_s=sum(classes.values())
                * adapter_for(provider.kind).requests_per_success,
            )
            # Pure but not free (a plan walk per size class and candidate hit chance):
            # off the event loop, whose send slots allow a few milliseconds of lateness.
            forecast = await asyncio.to_thread(
                policy.saturation,
                policy.priced_workloads(
                    partial(learned.model_for_class, name),
                    classes,
                    active=active,
                ),
                provider,
                capacity,
                overdue.get(name, 0),
                planned=intervals,
                drain_s=self.settings.engine.backlog_drain_s,
            )
            await states.record_forecast(
                name,
                demand_per_s=forecast.demand_per_s,
                capacity_per_s=capacity,
                hit_chance=forecast.hit_chance,
                active_tasks=active,
                expected_delay_s=forecast.expected_detection_delay_s,
                saturated=forecast.ratio > 1.0,
            )

    async def _tick(self) -> None:
        for loop in self.loops.values():
            loop.wake()

    def _on_notify(self, provider: str) -> None:
        loop = self.loops.get(provider)
        if loop is not None:
            loop.wake()

    async def stop(self) -> None:
        grace = self.settings.engine.shutdown_grace_s
        if self._owns_scheduler:
            self.scheduler.shutdown(wait=False)
        self._listener_stop.set()
        await asyncio.gather(*(loop.drain(grace) for loop in self.loops.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
        log.info("engine_stopped", owner=self.owner)


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
