"""What one poll's result does to its task (pure; table-tested in
tests/polling/test_outcomes.py).

`decide` reads the task as it stands and the poll's result and returns a `Decision`: the
columns to set, the status change to make (with its result or error) and the completion
age to learn from. `PollingService.apply_all` (app/polling/service.py) then writes it once,
under the claim's fencing token. Keeping the decision apart from the write is what lets a
batch of results be decided first and written together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.core.config import ProviderSettings
from app.models import Task, TaskStatus
from app.providers.base import CredentialError, PollOutcome, ProviderError, RateLimited, TaskError
from app.schedule import plans
from app.schedule.model import CompletionModel
from app.tasks.transitions import can_transition

# Statuses whose timing says when the upstream finishes work: learned from. An expiry, a
# timeout or a cancellation says nothing about how long the work takes.
LEARNED_FROM = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED})

DEADLINE_EXCEEDED = {
    "code": "deadline_exceeded",
    "message": "the task did not finish before its deadline_at",
}


@dataclass(frozen=True)
class PollResult:
    """What one poll produced: an outcome or a classified error, whether a request
    actually reached the upstream (counted in `polls`), and the adapter's checkpoint as the
    poll left it (stored with the task whatever the outcome)."""

    outcome: PollOutcome | None = None
    error: ProviderError | None = None
    sent: bool = True
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class PolledTask:
    """The parts of a task a decision reads."""

    status: TaskStatus
    created_at: datetime
    deadline_at: datetime
    # The previous poll that saw the task running (its registration before the first).
    previous_poll_at: datetime
    polls: int
    consecutive_errors: int
    unchanged_polls: int
    # A provider callback came while this poll was in flight: its answer may predate what
    # the callback announced, so the next poll comes as soon as the spacing allows.
    poll_again: bool = False

    @classmethod
    def of(cls, task: Task) -> PolledTask:
        return cls(
            status=TaskStatus(task.status),
            created_at=task.created_at,
            deadline_at=task.deadline_at,
            previous_poll_at=task.last_polled_at or task.created_at,
            polls=task.polls,
            consecutive_errors=task.consecutive_errors,
            unchanged_polls=task.unchanged_polls,
            poll_again=task.poll_again,
        )


@dataclass(frozen=True)
class Transition:
    status: TaskStatus
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    # Task columns to set, before the transitions (an ending one clears what an ended task
    # no longer needs: app/tasks/service.py transition).
    changes: dict[str, Any] = field(default_factory=dict)
    # In order, each with its event: a task seen processing past its deadline has two.
    transitions: tuple[Transition, ...] = ()
    # Seconds from registration to completion, to learn from (None: nothing to learn).
    completed_after_s: float | None = None
    # When an upstream answer ended the task: seconds since the poll before it that saw the
    # task running (its registration, for a first poll), the most pollhook can have been
    # late to notice (pollhook_detection_gap_seconds). None otherwise.
    detection_gap_s: float | None = None


def decide(
    task: PolledTask,
    result: PollResult,
    now: datetime,
    settings: ProviderSettings,
    *,
    auth_retry_s: float,
    model: CompletionModel | None,
    hit_chance: float | None,
    rng: random.Random,
) -> Decision:
    changes: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
        "checkpoint": result.checkpoint,
    }
    if result.sent:
        changes["polls"] = task.polls + 1
        changes["last_polled_at"] = now
        changes["poll_again"] = False
    transitions: list[Transition] = []
    completed_after_s: float | None = None
    delay: float | None = None
    age_s = (now - task.created_at).total_seconds()
    # The previous poll that saw the task running, held within (registration, now]: a
    # database clock stepped back (NTP) would otherwise place it after this answer.
    previous = min(max(task.previous_poll_at, task.created_at), now)

    if result.outcome is not None:
        outcome = result.outcome
        changes.update(
            last_response=outcome.raw,
            upstream_status=outcome.upstream_status,
            consecutive_errors=0,
            poll_error=None,
        )
        unchanged = task.unchanged_polls + 1
        if outcome.status is not None and can_transition(task.status, outcome.status):
            transitions.append(
                Transition(
                    outcome.status,
                    result=outcome.result.model_dump(mode="json") if outcome.result else None,
                    error=outcome.error,
                )
            )
            unchanged = 0
            if outcome.status in LEARNED_FROM:
                # The task finished somewhere after the previous poll that saw it running.
                finished_at = previous + (now - previous) / 2
                completed_after_s = max(0.0, (finished_at - task.created_at).total_seconds())
        delay = plans.plan_next(
            settings, age_s=age_s, unchanged_polls=unchanged, model=model, hit_chance=hit_chance
        )
        changes.update(unchanged_polls=unchanged, poll_interval_s=delay)
        if task.poll_again:
            delay = 0.0  # min_poll_interval_s, the floor
    elif isinstance(result.error, TaskError):
        code = result.error.code or "task_error"
        transitions.append(
            Transition(TaskStatus.FAILED, error={"code": code, "message": result.error.message})
        )
        changes["last_response"] = result.error.raw
    elif isinstance(result.error, CredentialError):
        # Not the task's fault: it waits for a working key instead of failing or aging
        # towards its deadline on errors it cannot cause.
        changes.update(_waiting_on(result.error, now))
        wait_s = max(plans.jittered(auth_retry_s, rng), settings.min_poll_interval_s)
        changes["next_poll_at"] = now + timedelta(seconds=wait_s)
        return Decision(changes)
    elif result.error is not None:
        changes.update(_waiting_on(result.error, now))
        errors = task.consecutive_errors + 1
        changes["consecutive_errors"] = errors
        retry_after = result.error.retry_after_s if isinstance(result.error, RateLimited) else None
        delay = plans.error_delay(settings, errors, retry_after)

    ends = transitions[-1].status if transitions else task.status
    detection_gap_s: float | None = None
    if ends.is_terminal and transitions and ends is not TaskStatus.TIMED_OUT:
        # The upstream said so (a terminal status or a task error); a deadline is pollhook's.
        detection_gap_s = (now - previous).total_seconds()
    if not ends.is_terminal:
        if now >= task.deadline_at:
            transitions.append(Transition(TaskStatus.TIMED_OUT, error=dict(DEADLINE_EXCEEDED)))
        else:
            changes["next_poll_at"] = plans.next_poll_at(
                now,
                delay if delay is not None else 0.0,
                task.deadline_at,
                rng,
                floor_s=settings.min_poll_interval_s,
                # Error backoff may go past max_poll_interval_s; a planned poll not.
                ceiling_s=plans.ceiling_s(settings) if result.outcome is not None else None,
            )
            reported = result.outcome.ready_at if result.outcome is not None else None
            ready = plans.estimated_ready_age(model, age_s)
            if reported is not None:
                # The provider's own ETA (or queue position) beats what was learned.
                changes["estimated_ready_at"] = max(reported, now)
            else:
                changes["estimated_ready_at"] = (
                    task.created_at + timedelta(seconds=ready) if ready is not None else None
                )
    return Decision(changes, tuple(transitions), completed_after_s, detection_gap_s)


def _waiting_on(error: ProviderError, now: datetime) -> dict[str, Any]:
    """Why the task waits, as `GET /v1/tasks/{id}` shows it (the key already cut out)."""
    changes: dict[str, Any] = {
        "poll_error": {
            "reason": error.reason.value,
            "code": error.code,
            "message": error.message[:1000],
            "at": now.isoformat(),
        }
    }
    if error.raw is not None:
        changes["last_response"] = error.raw
    return changes
