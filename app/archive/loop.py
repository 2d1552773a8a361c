"""The archive loop: claims due jobs, copies each job's files, records each try.

A job is leased like a delivery: a replica that dies mid-copy leaves a job that falls due
again when its lease runs out, and the next try copies only what the last one did not
record. A NOTIFY on a new job wakes the loop at once; the tick carries retries.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive.copier import Copier, CopyError, Source
from app.archive.repository import ArchiveRepository, ClaimedJob
from app.archive.retries import Reason
from app.archive.service import ArchiveService, TryResult
from app.core.config import Settings
from app.core.logging import get_logger
from app.core.loop import LeasedLoop

log = get_logger("pollhook.archive")

MAX_BATCH = 32
# One try of a job may take this long (a large file over a slow link); its lease is longer.
TRY_TIMEOUT_S = 900.0


class ArchiveLoop(LeasedLoop):
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        copier: Copier,
        owner: str,
    ) -> None:
        super().__init__(
            max_in_flight=settings.archive.concurrency, error_event="archive_loop_error"
        )
        self.settings = settings
        self.sessions = sessions
        self.copier = copier
        self.owner = owner
        self.tick_s = settings.engine.tick_s

    async def iteration(self) -> None:
        free = self.free
        if free <= 0:
            await self.sleep(self.tick_s)
            return
        asked = min(free, MAX_BATCH)
        async with self.sessions.begin() as session:
            jobs = await ArchiveRepository(session).claim(
                limit=asked, owner=self.owner, lease_s=TRY_TIMEOUT_S + 60
            )
        for job in jobs:
            self.start(job.id, self._run(job))
        if len(jobs) < asked:
            await self.sleep(self.tick_s)

    async def _run(self, job: ClaimedJob) -> None:
        outcome = await self._copy(job)
        try:
            async with self.sessions.begin() as session:
                await ArchiveService(session, self.settings).record(job, outcome)
        except Exception as exc:
            # The claim stays until its lease runs out; then the job is tried again.
            log.warning("archive_unrecorded", task_id=str(job.id), error=type(exc).__name__)

    async def _copy(self, job: ClaimedJob) -> TryResult:
        """Copy what earlier tries did not, source by source, keeping what is done when
        one fails."""
        files = list(job.files)
        done = {f.get("source") for f in files}
        taken = {str(f["name"]) for f in files}
        try:
            async with asyncio.timeout(TRY_TIMEOUT_S):
                for index, source in enumerate(job.sources):
                    if index in done:
                        continue
                    copied = await self.copier.copy(
                        job.tenant, job.id, Source(source["kind"], source["url"]), taken
                    )
                    files.extend({**f, "source": index} for f in copied)
        except CopyError as exc:
            return TryResult(files, exc)
        except TimeoutError:
            return TryResult(
                files, CopyError(Reason.UNREACHABLE, f"the copy took over {TRY_TIMEOUT_S:g} s")
            )
        except Exception as exc:
            # A fault of ours, not the copy's: recorded as a try like any other, so its
            # retries and its deadline apply and the task shows it.
            log.error("archive_try_crashed", task_id=str(job.id), error=type(exc).__name__)
            return TryResult(
                files, CopyError(Reason.INTERNAL, f"pollhook failed: {type(exc).__name__}")
            )
        return TryResult(files, None)
