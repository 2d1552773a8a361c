"""Apply polls' results to their tasks, under each claim's fencing token: decide in pure
code (app/polling/outcomes.py), then write every decision of a batch together, one
set-based statement per table, in the caller's transaction."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.archive.repository import NewJob
from app.archive.service import ArchiveIntake, enqueue
from app.core.config import ProviderSettings
from app.models import TaskStatus
from app.polling.outcomes import PolledTask, PollResult, decide
from app.polling.repository import Claim, PollingRepository
from app.schedule.forecasts import Forecasts
from app.schedule.model import size_class
from app.schedule.repository import CompletionRepository, Sample
from app.tasks.service import transition, write_events
from app.webhooks.events import NewEvent


@dataclass(frozen=True)
class Applied:
    task_id: str
    status: TaskStatus
    changed: bool
    # Decision.detection_gap_s: set when the upstream's answer ended the task.
    detection_gap_s: float | None = None


class PollingService:
    def __init__(
        self,
        session: AsyncSession,
        settings: ProviderSettings,
        *,
        auth_retry_s: float,
        rng: random.Random,
        forecasts: Forecasts,
        archive: ArchiveIntake,
    ) -> None:
        self.archive = archive
        self.session = session
        self.polling = PollingRepository(session)
        self.completions = CompletionRepository(session)
        self.settings = settings
        self.auth_retry_s = auth_retry_s
        self.rng = rng
        self.forecasts = forecasts

    async def apply(self, claim: Claim, result: PollResult) -> Applied | None:
        """Write one result if its claim still holds; None when another holder took over."""
        return (await self.apply_all([(claim, result)]))[0]

    async def apply_all(self, results: Sequence[tuple[Claim, PollResult]]) -> list[Applied | None]:
        """Write every result whose claim still holds, in order; None for one whose claim
        another holder (or a cancellation) took over: that late answer is dropped."""
        held = await self.polling.lock_held([claim for claim, _ in results])
        if held is None:
            return [None] * len(results)
        applied: list[Applied | None] = []
        written = []
        events: list[NewEvent] = []
        samples: list[Sample] = []
        jobs: list[NewJob] = []
        for claim, result in results:
            # Only the claim the row is held under, and only its first result: a result of
            # an older claim of the same task (its lease ran out while the result waited to
            # be written, and the task was claimed again) is a stale holder's.
            task = held.tasks.pop((claim.id, claim.token), None)
            if task is None:
                applied.append(None)
                continue
            before = TaskStatus(task.status)
            decision = decide(
                PolledTask.of(task),
                result,
                held.now,
                self.settings,
                auth_retry_s=self.auth_retry_s,
                model=self.forecasts.model_for(task.provider, task.size_hint),
                hit_chance=self.forecasts.hit_chance_for(task.provider),
                rng=self.rng,
            )
            for column, value in decision.changes.items():
                setattr(task, column, value)
            for change in decision.transitions:
                event = transition(
                    task, change.status, held.now, result=change.result, error=change.error
                )
                if change.status is TaskStatus.SUCCEEDED:
                    archived = self.archive.job(task, event, held.now)
                    if archived is not None:
                        job, event = archived
                        jobs.append(job)
                events.append(event)
            if decision.completed_after_s is not None:
                samples.append(
                    Sample(task.provider, size_class(task.size_hint), decision.completed_after_s)
                )
            written.append(task)
            status = TaskStatus(task.status)
            applied.append(
                Applied(str(task.id), status, status != before, decision.detection_gap_s)
            )
        await self.polling.write_outcomes(written)
        await write_events(self.session, events)
        await enqueue(self.session, jobs)
        await self.completions.add_samples(samples)
        return applied
