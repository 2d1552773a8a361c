"""The archive's logic: which successes are archived and how their jobs start (in the
transaction that records the success), and what one try's outcome does to the job, the
task and its held terminal event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.archive.copier import CopyError
from app.archive.repository import ArchiveRepository, ClaimedJob, NewJob
from app.archive.retries import Reason, decide
from app.blobs.views import ArchiveStatus
from app.core.config import Settings
from app.core.logging import get_logger
from app.core.metrics import (
    ARCHIVE_DEADLINE_MISSES,
    ARCHIVE_FAILURES,
    ARCHIVE_LAG_SECONDS,
    ARCHIVED_BYTES,
    ARCHIVED_FILES,
)
from app.models import Task
from app.providers.base import ProviderAdapter
from app.providers.registry import adapter_for, read_result
from app.tasks.service import show_archive
from app.webhooks.events import NewEvent
from app.webhooks.outbox import release_held

log = get_logger("pollhook.archive")


class ArchiveIntake:
    """Which of one provider instance's successes are archived, and the job each starts."""

    def __init__(self, adapter: ProviderAdapter, *, enabled: bool, wait_s: float) -> None:
        self.adapter = adapter
        self.enabled = enabled
        self.wait_s = wait_s

    @classmethod
    def of(cls, settings: Settings, instance: str) -> ArchiveIntake:
        provider = settings.providers[instance]
        return cls(
            adapter_for(provider.kind),
            enabled=settings.archive.url is not None and provider.archive,
            wait_s=settings.archive.wait_s,
        )

    def job(self, task: Task, event: NewEvent, now: datetime) -> tuple[NewJob, NewEvent] | None:
        """The job for a task that just succeeded with `event`, and the event held back
        for it; None when there is nothing to archive."""
        if not self.enabled or task.result is None:
            return None
        try:
            files = self.adapter.result_files(read_result(task.result), now)
        except Exception as exc:
            # Never the outcome write's failure: the task succeeds, unarchived.
            log.error("archive_result_unreadable", task_id=str(task.id), error=type(exc).__name__)
            return None
        if not files:
            return None
        hold_until = now + timedelta(seconds=self.wait_s) if self.wait_s > 0 else None
        job = NewJob(
            id=task.id,
            tenant=task.tenant,
            provider=task.provider,
            sources=[{"kind": f.kind, "url": f.url} for f in files],
            deadline_at=min(f.expires_at for f in files),
            event_id=event.id if hold_until is not None else None,
            hold_until=hold_until,
        )
        return job, replace(event, hold_s=self.wait_s)


async def enqueue(session: AsyncSession, jobs: Sequence[NewJob]) -> None:
    await ArchiveRepository(session).enqueue(jobs)


@dataclass(frozen=True)
class TryResult:
    """One try of a job: the files it holds now (each with the index of its source), and
    the error that stopped it, if one did."""

    files: list[dict[str, Any]]
    error: CopyError | None


class ArchiveService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.repo = ArchiveRepository(session)
        self.session = session
        self.settings = settings.archive

    async def record(self, job: ClaimedJob, outcome: TryResult) -> None:
        """Write one try's outcome under the job's claim (dropped if another replica took
        it over): done, retried later, or given up. The task shows it; a done or given-up
        job sends its held terminal event now, or, when that event has gone out already,
        a finished copy announces itself with `task.archived`."""
        now = await self.repo.now()
        new = outcome.files[len(job.files) :]
        error = outcome.error
        decision = (
            None
            if error is None
            else decide(
                error.reason, job.attempts + 1, now, job.deadline_at, self.settings.retry_base_s
            )
        )
        problem = None
        if error is not None and decision is not None:
            problem = {
                "reason": decision.reason.value,
                "message": error.message
                if decision.reason is error.reason
                else f"the provider's URL died before the copy finished (last: {error.message})",
                "at": now.isoformat(),
            }
        if decision is None:
            status = ArchiveStatus.ARCHIVED
        elif decision.retry_at is None:
            status = ArchiveStatus.FAILED
        else:
            status = ArchiveStatus.PENDING
        ended = await self.repo.end_try(
            job,
            status={
                ArchiveStatus.ARCHIVED: "done",
                ArchiveStatus.FAILED: "failed",
                ArchiveStatus.PENDING: "pending",
            }[status],
            files=outcome.files,
            error=problem,
            retry_at=decision.retry_at if decision else None,
            retention_s=self.settings.retention_days * 86_400,
        )
        if ended is None:
            return
        archived_at = ended.now if status is ArchiveStatus.ARCHIVED else None
        shown = _shown(status, job, outcome.files, problem, archived_at)
        # Whether the terminal event had gone out to anyone yet is read under the lock of
        # its deliveries, in this transaction: a delivery loop that claims one as the hold
        # runs out either finds it released with the files, or this finds it taken and
        # announces the files instead. A hold's clock alone cannot tell the two apart.
        unsent = status is not ArchiveStatus.PENDING and (
            job.event_id is not None and await release_held(self.session, job.event_id)
        )
        if status is ArchiveStatus.ARCHIVED and not unsent:
            await show_archive(self.session, job.tenant, job.id, shown, ended.now)
        else:
            await self.repo.show(job.tenant, job.id, shown)
        _count(new)
        if error is None or decision is None:
            ARCHIVE_LAG_SECONDS.observe(max((ended.now - job.detected_at).total_seconds(), 0))
            log.info("archive_done", task_id=str(job.id), files=len(outcome.files))
            return
        final = decision.retry_at is None
        ARCHIVE_FAILURES.labels(error.reason.value, str(final).lower()).inc()
        if final and decision.reason is Reason.EXPIRED:
            ARCHIVE_DEADLINE_MISSES.inc()
        log.warning(
            "archive_failed",
            task_id=str(job.id),
            reason=error.reason.value,
            detail=error.message[:300],
            final=final,
            retry_at=decision.retry_at.isoformat() if decision.retry_at else None,
        )


def _shown(
    status: ArchiveStatus,
    job: ClaimedJob,
    files: list[dict[str, Any]],
    error: dict[str, Any] | None,
    archived_at: datetime | None,
) -> dict[str, Any]:
    """`tasks.archive`: what consumers see (app/blobs/views.py)."""
    return {
        "status": status.value,
        "attempts": job.attempts + 1,
        "files": [{k: v for k, v in f.items() if k != "source"} for f in files],
        "error": error,
        "archived_at": archived_at.isoformat() if archived_at else None,
        "deleted_at": None,
    }


def _count(files: list[dict[str, Any]]) -> None:
    ARCHIVED_FILES.inc(len(files))
    ARCHIVED_BYTES.inc(sum(int(f["bytes"]) for f in files))
