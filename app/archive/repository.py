"""All of the archive's SQL: its queue (`archive_jobs`) and what it shows on the task
(`tasks.archive`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import claim_statement, rows_of, rows_param
from app.models import ArchiveJob

# The wake-up channel of the archive_jobs_notify trigger: a new job is copied at once.
ARCHIVE_CHANNEL = "pollhook_archive"

_NEW_ROWS = rows_of(
    ArchiveJob.__table__,
    ["id", "tenant", "provider", "sources", "deadline_at", "event_id", "hold_until"],
    alias="n",
)

# New jobs, and their tasks shown as pending, in one statement (in the transaction that
# records the success, so a job exists for every archived success or for none).
_ENQUEUE = text(
    f"""
    WITH added AS (
        INSERT INTO archive_jobs
            (id, tenant, provider, status, sources, deadline_at, event_id, hold_until,
             next_attempt_at, detected_at)
        SELECT n.id, n.tenant, n.provider, 'pending', n.sources, n.deadline_at, n.event_id,
               n.hold_until, now(), now()
        FROM {_NEW_ROWS}
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    UPDATE tasks SET archive = jsonb_build_object(
        'status', 'pending', 'attempts', 0, 'files', '[]'::jsonb, 'error', NULL,
        'archived_at', NULL, 'deleted_at', NULL)
    FROM added WHERE tasks.id = added.id
    """
)

_CLAIM = claim_statement(
    table="archive_jobs",
    due_column="next_attempt_at",
    where="status = 'pending'",
    returning="c.id, c.fencing_token, c.tenant, c.provider, c.sources, c.files, c.attempts, "
    "c.detected_at, c.deadline_at, c.event_id, c.hold_until",
)


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID  # the task's
    tenant: str
    provider: str
    sources: list[dict[str, Any]]
    deadline_at: datetime
    event_id: uuid.UUID | None
    hold_until: datetime | None


@dataclass(frozen=True)
class ClaimedJob:
    """A job this replica may work on while `token` still matches."""

    id: uuid.UUID
    token: int
    tenant: str
    provider: str
    sources: list[dict[str, Any]]
    # Copied by earlier tries: each a StoredFile with the index of its `source`.
    files: list[dict[str, Any]]
    attempts: int
    detected_at: datetime
    deadline_at: datetime
    event_id: uuid.UUID | None
    hold_until: datetime | None


@dataclass(frozen=True)
class Ended:
    """A try recorded under its claim, at this time of the database clock."""

    now: datetime


@dataclass(frozen=True)
class Purgeable:
    id: uuid.UUID
    keys: list[str]


class ArchiveRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def now(self) -> datetime:
        value = await self.session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    async def enqueue(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        await self.session.execute(
            _ENQUEUE,
            {
                "rows": rows_param(
                    {
                        "id": job.id,
                        "tenant": job.tenant,
                        "provider": job.provider,
                        "sources": job.sources,
                        "deadline_at": job.deadline_at,
                        "event_id": job.event_id,
                        "hold_until": job.hold_until,
                    }
                    for job in jobs
                )
            },
        )

    async def claim(self, *, limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        rows = await self.session.execute(
            _CLAIM, {"limit": limit, "owner": owner, "lease_s": lease_s}
        )
        return [
            ClaimedJob(
                id=r.id,
                token=r.fencing_token,
                tenant=r.tenant,
                provider=r.provider,
                sources=r.sources,
                files=r.files,
                attempts=r.attempts,
                detected_at=r.detected_at,
                deadline_at=r.deadline_at,
                event_id=r.event_id,
                hold_until=r.hold_until,
            )
            for r in rows
        ]

    async def end_try(
        self,
        job: ClaimedJob,
        *,
        status: str,
        files: list[dict[str, Any]],
        error: dict[str, Any] | None,
        retry_at: datetime | None,
        retention_s: float,
    ) -> Ended | None:
        """Record one try of `job` if its claim still holds (None: another replica took it
        over, and this try's outcome is dropped). A job that ends with files keeps them
        for `retention_s`."""
        row = (
            await self.session.execute(
                text(
                    """
                    UPDATE archive_jobs SET
                        status = :status,
                        files = CAST(:files AS jsonb),
                        last_error = CAST(:error AS jsonb),
                        attempts = attempts + 1,
                        next_attempt_at = :retry_at,
                        lease_owner = NULL,
                        lease_expires_at = NULL,
                        finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE now() END,
                        purge_at = CASE WHEN :status <> 'pending' AND :has_files
                                        THEN now() + make_interval(secs => :retention_s) END
                    WHERE id = :id AND fencing_token = :token
                    RETURNING now() AS now
                    """
                ),
                {
                    "id": job.id,
                    "token": job.token,
                    "status": status,
                    "files": json.dumps(files),
                    "error": json.dumps(error) if error is not None else None,
                    "retry_at": retry_at,
                    "has_files": bool(files),
                    "retention_s": retention_s,
                },
            )
        ).one_or_none()
        return None if row is None else Ended(row.now)

    async def show(self, tenant: str, task_id: uuid.UUID, archive: dict[str, Any]) -> None:
        """What the task shows of its archive, when no event announces it."""
        await self.session.execute(
            text(
                "UPDATE tasks SET archive = CAST(:archive AS jsonb) "
                "WHERE tenant = :tenant AND id = :id"
            ),
            {"tenant": tenant, "id": task_id, "archive": json.dumps(archive)},
        )

    async def purgeable(self, limit: int) -> list[Purgeable]:
        """Jobs whose files' retention is over, locked for this transaction."""
        rows = await self.session.execute(
            text(
                """
                SELECT id, files FROM archive_jobs
                WHERE purge_at <= now()
                ORDER BY purge_at
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
                """
            ),
            {"limit": limit},
        )
        return [Purgeable(r.id, [f["key"] for f in r.files]) for r in rows]

    async def purged(self, ids: Sequence[uuid.UUID]) -> None:
        """The jobs' files are gone: their tasks say so (status `deleted`, each file kept
        without a link)."""
        await self.session.execute(
            text(
                """
                WITH done AS (
                    UPDATE archive_jobs SET status = 'purged', purge_at = NULL
                    WHERE id = ANY(CAST(:ids AS uuid[]))
                    RETURNING id
                )
                UPDATE tasks SET archive = tasks.archive
                    || jsonb_build_object('status', 'deleted', 'deleted_at', now())
                FROM done WHERE tasks.id = done.id AND tasks.archive IS NOT NULL
                """
            ),
            {"ids": list(ids)},
        )

    async def backlog(self) -> tuple[int, float | None]:
        """Pending jobs, and the age of the oldest (s), for health and metrics."""
        row = (
            await self.session.execute(
                text(
                    "SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(detected_at)) AS age "
                    "FROM archive_jobs WHERE status = 'pending'"
                )
            )
        ).one()
        return int(row.n), None if row.age is None else float(row.age)
