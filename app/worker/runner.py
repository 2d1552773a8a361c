"""The background engine's process: poll and delivery loops on one APScheduler, started
together, drained together on a stop signal."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.worker import ArchiveWorker
from app.blobs.stores import open_store
from app.blobs.views import ArchiveLinks
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.logging import get_logger
from app.overview.recorder import RECORD_INTERVAL_S, ActivityRecorder
from app.polling.worker import PollWorker
from app.webhooks.delivery import DeliveryWorker

log = get_logger("pollhook.worker")

HOUSEKEEPING_INTERVAL_S = 60
GAUGE_REFRESH_S = 15


async def run_worker(
    settings: Settings, engine: AsyncEngine, *, stop: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set, or until SIGINT/SIGTERM when no event is given."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    # APScheduler only ticks the loops and runs housekeeping; it holds no task state.
    scheduler = AsyncIOScheduler()
    polls = PollWorker(settings, engine, scheduler=scheduler)
    store = open_store(settings)
    links = ArchiveLinks(store, link_ttl_s=settings.archive.link_ttl_s)
    deliveries = DeliveryWorker(settings, engine, polls.owner, links)
    activity = ActivityRecorder(create_sessionmaker(engine), polls.owner)
    archive = ArchiveWorker(settings, engine, polls.owner, store) if store else None
    await polls.start()
    deliveries.start()
    # Each job runs alone (max_instances=1), a missed run is not made up (coalesce).
    jobs: list[tuple[Callable[[], Awaitable[None]], float, str]] = [
        (deliveries.tick, settings.engine.tick_s, "delivery-tick"),
        (deliveries.housekeeping, HOUSEKEEPING_INTERVAL_S, "housekeeping"),
        (activity.record, RECORD_INTERVAL_S, "activity"),
    ]
    if archive is not None:
        archive.start()
        jobs += [
            (archive.tick, settings.engine.tick_s, "archive-tick"),
            (archive.housekeeping, HOUSEKEEPING_INTERVAL_S, "archive-housekeeping"),
        ]
    for job, every_s, name in jobs:
        scheduler.add_job(job, "interval", seconds=every_s, max_instances=1, coalesce=True, id=name)
    if settings.metrics_port is not None:
        _serve_metrics(settings, engine, scheduler)
    scheduler.start()
    # What exists now (modules, SQLAlchemy's and pydantic's tables, settings, clients) lives
    # as long as the process: out of the collector's reach, a full collection no longer
    # scans it all. One such pause was 78-128 ms in the delivery benchmark's rate phase,
    # stalling every delivery in flight (docs/benchmarks.md, "Webhook delivery").
    # Collected first, so the garbage startup left (imports, schema building) is freed
    # rather than frozen with it.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        # Stop claiming, let in-flight work finish (bounded), release the rest.
        scheduler.shutdown(wait=False)
        await asyncio.gather(
            polls.stop(), deliveries.stop(), *([archive.stop()] if archive else [])
        )
        # What the loops did since the last record, so a stop loses none of it.
        await activity.record()


def _serve_metrics(settings: Settings, engine: AsyncEngine, scheduler: AsyncIOScheduler) -> None:
    """A worker has no API: serve its metrics on their own port, and keep the gauges of
    shared state fresh from Postgres."""
    from prometheus_client import start_http_server

    from app.core.metrics import REGISTRY
    from app.health.service import refresh_shared_state

    assert settings.metrics_port is not None
    start_http_server(settings.metrics_port, addr=settings.host, registry=REGISTRY)
    scheduler.add_job(
        refresh_shared_state,
        "interval",
        args=[create_sessionmaker(engine), settings],
        seconds=GAUGE_REFRESH_S,
        # The first scrape need not wait a whole period for the shared gauges.
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id="gauges",
    )
    log.info("worker_metrics", host=settings.host, port=settings.metrics_port)
