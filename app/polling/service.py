"""Apply one poll's result to its task, under the claim's fencing token."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import ProviderSettings
from app.models import Task, TaskStatus
from app.polling.repository import Claim, PollingRepository
from app.providers.base import CredentialError, PollOutcome, ProviderError, RateLimited, TaskError
from app.schedule import plans
from app.schedule.forecasts import Forecasts
from app.schedule.model import CompletionModel, size_class
from app.schedule.repository import CompletionRepository
from app.tasks.repository import TaskRepository
from app.tasks.service import change_status
from app.tasks.transitions import can_transition

# Statuses whose timing says when the upstream finishes work: learned from. An expiry, a
# timeout or a cancellation says nothing about how long the work takes.
LEARNED_FROM = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED})


@dataclass(frozen=True)
class PollResult:
    """What one poll produced: an outcome or a classified error, whether a request
    actually reached the upstream (counted in `polls`), and the adapter's checkpoint as the
    poll left it (stored with the task whatever the outcome)."""

    outcome: PollOutcome | None = None
    error: ProviderError | None = None
    sent: bool = True
    retry_after_s: float | None = None
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class Applied:
    task_id: str
    status: TaskStatus
    changed: bool


class PollingService:
    def __init__(
        self,
        session: AsyncSession,
        settings: ProviderSettings,
        *,
        auth_retry_s: float,
        rng: random.Random,
        forecasts: Forecasts | None = None,
    ) -> None:
        self.polling = PollingRepository(session)
        self.tasks = TaskRepository(session)
        self.completions = CompletionRepository(session)
        self.settings = settings
        self.auth_retry_s = auth_retry_s
        self.rng = rng
        self.forecasts = forecasts or Forecasts(ttl_s=0)

    async def apply(self, claim: Claim, result: PollResult) -> Applied | None:
        """Write the result if the claim still holds; None when another holder took over."""
        task = await self.polling.lock_if_held(claim)
        if task is None:
            return None
        now = await self.tasks.now()
        before = TaskStatus(task.status)
        # The task finished somewhere after the previous poll that saw it running.
        previous_poll = task.last_polled_at or task.created_at
        task.lease_owner = None
        task.lease_expires_at = None
        task.updated_at = now
        # Before any status change: one that ends the task clears it (change_status).
        task.checkpoint = result.checkpoint
        if result.sent:
            task.polls += 1
            task.last_polled_at = now

        delay: float | None = None
        model = self.forecasts.model_for(task.provider, task.size_hint)
        if result.outcome is not None:
            delay = await self._apply_outcome(task, result.outcome, now, model)
            if TaskStatus(task.status) in LEARNED_FROM and result.outcome.status is not None:
                finished_at = previous_poll + (now - previous_poll) / 2
                await self.completions.add_sample(
                    task.provider,
                    size_class(task.size_hint),
                    max(0.0, (finished_at - task.created_at).total_seconds()),
                )
        elif isinstance(result.error, TaskError):
            await change_status(
                self.tasks,
                task,
                TaskStatus.FAILED,
                now,
                error={"code": result.error.code or "task_error", "message": result.error.message},
            )
            task.last_response = result.error.raw
        elif isinstance(result.error, CredentialError):
            # Not the task's fault: it waits for a working key instead of failing or aging
            # towards its deadline on errors it cannot cause.
            self._record_error(task, result.error, now)
            task.next_poll_at = now + timedelta(
                seconds=max(
                    plans.jittered(self.auth_retry_s, self.rng),
                    self.settings.min_poll_interval_s,
                )
            )
            return Applied(str(task.id), TaskStatus(task.status), False)
        elif result.error is not None:
            self._record_error(task, result.error, now)
            task.consecutive_errors += 1
            retry_after = (
                result.error.retry_after_s if isinstance(result.error, RateLimited) else None
            )
            delay = plans.error_delay(self.settings, task.consecutive_errors, retry_after)

        if not TaskStatus(task.status).is_terminal:
            if now >= task.deadline_at:
                await change_status(
                    self.tasks,
                    task,
                    TaskStatus.TIMED_OUT,
                    now,
                    error={
                        "code": "deadline_exceeded",
                        "message": "the task did not finish before its deadline_at",
                    },
                )
            else:
                task.next_poll_at = plans.next_poll_at(
                    now,
                    delay if delay is not None else 0.0,
                    task.deadline_at,
                    self.rng,
                    floor_s=self.settings.min_poll_interval_s,
                    # Error backoff may go past max_poll_interval_s; a planned poll not.
                    ceiling_s=(
                        self.settings.max_poll_interval_s if result.outcome is not None else None
                    ),
                )
                age = (now - task.created_at).total_seconds()
                ready = plans.estimated_ready_age(model, age)
                task.estimated_ready_at = (
                    task.created_at + timedelta(seconds=ready) if ready is not None else None
                )
        status = TaskStatus(task.status)
        return Applied(str(task.id), status, status != before)

    async def _apply_outcome(
        self,
        task: Task,
        outcome: PollOutcome,
        now: datetime,
        model: CompletionModel | None,
    ) -> float:
        task.last_response = outcome.raw
        task.upstream_status = outcome.upstream_status
        task.consecutive_errors = 0
        task.poll_error = None
        current = TaskStatus(task.status)
        if outcome.status is not None and can_transition(current, outcome.status):
            await change_status(
                self.tasks,
                task,
                outcome.status,
                now,
                result=outcome.result.model_dump(mode="json") if outcome.result else None,
                error=outcome.error,
            )
            task.unchanged_polls = 0
        else:
            task.unchanged_polls += 1
        delay = plans.plan_next(
            self.settings,
            age_s=(now - task.created_at).total_seconds(),
            unchanged_polls=task.unchanged_polls,
            model=model,
            hit_chance=self.forecasts.hit_chance_for(task.provider),
        )
        task.poll_interval_s = delay
        return delay

    @staticmethod
    def _record_error(task: Task, error: ProviderError, now: datetime) -> None:
        """Why the task waits, as `GET /v1/tasks/{id}` shows it (the key already cut out)."""
        task.poll_error = {
            "reason": error.reason.value,
            "code": error.code,
            "message": error.message[:1000],
            "at": now.isoformat(),
        }
        if error.raw is not None:
            task.last_response = error.raw
