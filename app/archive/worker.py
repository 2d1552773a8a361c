"""The archive loop, its NOTIFY listener and retention, in one process."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.copier import MAX_REDIRECTS, Copier
from app.archive.loop import ArchiveLoop
from app.archive.repository import ARCHIVE_CHANNEL, ArchiveRepository
from app.blobs.base import BlobError, BlobStore
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.logging import get_logger
from app.core.netguard import SsrfGuard, guarded_client
from app.core.notify import Woken

log = get_logger("pollhook.archive")

PURGE_BATCH = 100
# A download waits this long for a connection or for its next bytes.
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0)


def download_client(settings: Settings) -> httpx.AsyncClient:
    """The client result files are downloaded with: the guarded client (a result URL comes
    from upstream) with the archive's own allow-list, redirects followed hop by hop when the
    copier asks, and no compressed transfer (a small gzip body must not inflate past the
    size cap between two checks)."""
    return guarded_client(
        SsrfGuard(settings.archive.allow_networks),
        timeout=DOWNLOAD_TIMEOUT,
        limits=httpx.Limits(
            max_connections=settings.archive.concurrency,
            max_keepalive_connections=settings.archive.concurrency,
        ),
        max_redirects=MAX_REDIRECTS,
        headers={"accept-encoding": "identity"},
    )


class ArchiveWorker:
    def __init__(
        self, settings: Settings, engine: AsyncEngine, owner: str, store: BlobStore
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.sessions = create_sessionmaker(engine)
        self.client = download_client(settings)
        copier = Copier(self.client, store, max_bytes=settings.archive.max_file_bytes)
        self.loop = ArchiveLoop(settings, self.sessions, copier, owner)
        self.running = Woken(self.loop, engine, ARCHIVE_CHANNEL)

    def start(self) -> None:
        self.running.start()

    async def tick(self) -> None:
        self.loop.wake()

    async def purge(self) -> int:
        """Delete the files whose retention is over, a batch at a time; their tasks then
        show them deleted. A store that fails keeps the batch for the next round."""
        purged = 0
        while True:
            async with self.sessions.begin() as session:
                repo = ArchiveRepository(session)
                due = await repo.purgeable(PURGE_BATCH)
                if not due:
                    return purged
                try:
                    await self.store.delete([key for job in due for key in job.keys])
                except BlobError as exc:
                    log.warning("archive_purge_failed", error=str(exc)[:300])
                    return purged
                await repo.purged([job.id for job in due])
            purged += len(due)
            if len(due) < PURGE_BATCH:
                return purged

    async def housekeeping(self) -> None:
        try:
            purged = await self.purge()
            if purged:
                log.info("archive_purged", tasks=purged)
        except Exception as exc:
            log.warning("archive_housekeeping_failed", error=type(exc).__name__)

    async def stop(self) -> None:
        try:
            await self.running.drain(self.settings.engine.shutdown_grace_s)
        finally:
            await self.running.end()
            await self.client.aclose()
