"""Apply one poll's result to its task, under the claim's fencing token: decide in pure
code (app/polling/outcomes.py), then write the decision once."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import ProviderSettings
from app.models import TaskStatus
from app.polling.outcomes import PolledTask, PollResult, decide
from app.polling.repository import Claim, PollingRepository
from app.schedule.forecasts import Forecasts
from app.schedule.model import size_class
from app.schedule.repository import CompletionRepository
from app.tasks.repository import TaskRepository
from app.tasks.service import change_status


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
        forecasts: Forecasts,
    ) -> None:
        self.polling = PollingRepository(session)
        self.tasks = TaskRepository(session)
        self.completions = CompletionRepository(session)
        self.settings = settings
        self.auth_retry_s = auth_retry_s
        self.rng = rng
        self.forecasts = forecasts

    async def apply(self, claim: Claim, result: PollResult) -> Applied | None:
        """Write the result if the claim still holds; None when another holder took over."""
        task = await self.polling.lock_if_held(claim)
        if task is None:
            return None
        now = await self.tasks.now()
        before = TaskStatus(task.status)
        decision = decide(
            PolledTask.of(task),
            result,
            now,
            self.settings,
            auth_retry_s=self.auth_retry_s,
            model=self.forecasts.model_for(task.provider, task.size_hint),
            hit_chance=self.forecasts.hit_chance_for(task.provider),
            rng=self.rng,
        )
        for column, value in decision.changes.items():
            setattr(task, column, value)
        for transition in decision.transitions:
            await change_status(
                self.tasks,
                task,
                transition.status,
                now,
                result=transition.result,
                error=transition.error,
            )
        if decision.completed_after_s is not None:
            await self.completions.add_sample(
                task.provider, size_class(task.size_hint), decision.completed_after_s
            )
        status = TaskStatus(task.status)
        return Applied(str(task.id), status, status != before)
