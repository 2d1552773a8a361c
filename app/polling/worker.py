"""The poll side of a worker process: a loop per provider instance, the NOTIFY listener
that wakes them on new registrations, the APScheduler ticker (the fallback wake-up) and
the periodic forecast refresh."""

from __future__ import annotations

import asyncio

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.service import ArchiveIntake
from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.http_client import ShardedTransport
from app.core.logging import get_logger
from app.core.loop import replica_id
from app.core.notify import listen
from app.polling.loop import PollLoop
from app.polling.repository import PollingRepository
from app.providers.registry import adapter_for
from app.schedule.forecasts import Forecasts
from app.schedule.refresh import ForecastRefresher
from app.tasks.repository import NOTIFY_CHANNEL

log = get_logger("pollhook.engine")


class PollWorker:
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
        # A client per instance, with as many connections, all kept alive, as its loop can
        # have busy: fewer means closing and reopening connections under load, and a pool
        # shared between instances would trade one upstream's warm connections for
        # another's.
        self.clients = {
            name: httpx.AsyncClient(
                follow_redirects=False,
                transport=transport or ShardedTransport(settings.engine.max_in_flight),
            )
            for name in settings.providers
        }
        self.forecasts = Forecasts(ttl_s=settings.engine.model_refresh_s)
        adapters = {name: adapter_for(p.kind) for name, p in settings.providers.items()}
        self.refresher = ForecastRefresher(
            settings,
            self.sessions,
            self.forecasts,
            {name: adapter.requests_per_success for name, adapter in adapters.items()},
        )
        self.loops = {
            name: PollLoop(
                name,
                provider,
                settings.engine,
                self.sessions,
                self.clients[name],
                self.owner,
                adapters[name],
                self.forecasts,
                ArchiveIntake.of(settings, name),
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
            rekeyed = await BudgetRepository(session).ensure_rows(self.settings.providers)
            resumed = await PollingRepository(session).resume_parked(rekeyed)
        if rekeyed:
            log.info("provider_key_changed", providers=rekeyed, tasks_resumed=resumed)
        await self.refresher.refresh()
        self.scheduler.add_job(
            self.refresher.refresh,
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
        await self.close()
        log.info("engine_stopped", owner=self.owner)

    async def close(self) -> None:
        """Close the instances' HTTP clients: what `stop` ends with, and all a worker that
        was never started needs."""
        for client in self.clients.values():
            await client.aclose()
