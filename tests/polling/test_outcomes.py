"""What one poll's result does to its task: app/polling/outcomes.py `decide`, pure, as a
table. The write (PollingService.apply) is covered against Postgres in test_repository.py,
test_spacing.py and test_checkpoint.py."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.models import TaskStatus
from app.polling.outcomes import DEADLINE_EXCEEDED, Decision, PolledTask, PollResult, decide
from app.providers.base import (
    CredentialError,
    PollOutcome,
    RateLimited,
    TaskError,
    TransientError,
)
from app.schedule import plans

MINIMAX = ProviderSettings(kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A])
CREATED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = CREATED + timedelta(seconds=60)
AUTH_RETRY_S = 300.0


def task(
    status: TaskStatus = TaskStatus.PROCESSING,
    *,
    deadline_in_s: float = 3600,
    last_polled_s: float | None = 40,
    consecutive_errors: int = 0,
    unchanged_polls: int = 2,
) -> PolledTask:
    return PolledTask(
        status=status,
        created_at=CREATED,
        deadline_at=NOW + timedelta(seconds=deadline_in_s),
        previous_poll_at=CREATED + timedelta(seconds=last_polled_s or 0),
        polls=3,
        consecutive_errors=consecutive_errors,
        unchanged_polls=unchanged_polls,
    )


def run(polled: PolledTask, result: PollResult) -> Decision:
    return decide(
        polled,
        result,
        NOW,
        MINIMAX,
        auth_retry_s=AUTH_RETRY_S,
        model=None,
        hit_chance=None,
        rng=random.Random(7),
    )


def seen(status: TaskStatus | None, **fields: Any) -> PollResult:
    return PollResult(
        outcome=PollOutcome(status, "upstream", raw={"answer": 1}, **fields),
        checkpoint={"step": "status"},
    )


def statuses(decision: Decision) -> list[TaskStatus]:
    return [t.status for t in decision.transitions]


@pytest.mark.parametrize(
    ("polled", "result", "moves", "unchanged", "errors"),
    [
        # A new status: a transition, and the backoff curve starts again.
        (task(TaskStatus.PENDING), seen(TaskStatus.PROCESSING), [TaskStatus.PROCESSING], 0, 0),
        # The same status: no transition, one more unchanged poll.
        (task(), seen(TaskStatus.PROCESSING), [], 3, 0),
        # A status pollhook does not know keeps the current one.
        (task(), seen(None), [], 3, 0),
        # Never backwards.
        (task(), seen(TaskStatus.QUEUED), [], 3, 0),
        # An answer clears the error streak.
        (task(consecutive_errors=4), seen(TaskStatus.PROCESSING), [], 3, 0),
    ],
)
def test_an_answer_that_keeps_the_task_running(
    polled: PolledTask,
    result: PollResult,
    moves: list[TaskStatus],
    unchanged: int,
    errors: int,
) -> None:
    decision = run(polled, result)
    assert statuses(decision) == moves
    changes = decision.changes
    assert changes["unchanged_polls"] == unchanged
    assert changes["consecutive_errors"] == errors
    assert changes["poll_error"] is None
    assert changes["last_response"] == {"answer": 1}
    assert changes["upstream_status"] == "upstream"
    expected = plans.plan_next(MINIMAX, age_s=60, unchanged_polls=unchanged, model=None)
    assert changes["poll_interval_s"] == expected
    gap = (changes["next_poll_at"] - NOW).total_seconds()
    assert MINIMAX.min_poll_interval_s <= gap <= MINIMAX.max_poll_interval_s
    assert changes["checkpoint"] == {"step": "status"}
    assert decision.completed_after_s is None
    assert decision.detection_gap_s is None


@pytest.mark.parametrize(
    ("status", "learned"),
    [(TaskStatus.SUCCEEDED, True), (TaskStatus.FAILED, True), (TaskStatus.EXPIRED, False)],
)
def test_an_ending_answer_ends_the_task_and_learns_from_its_duration(
    status: TaskStatus, learned: bool
) -> None:
    decision = run(task(last_polled_s=40), seen(status, error={"code": "x", "message": "y"}))
    [transition] = decision.transitions
    assert transition.status is status
    assert transition.error == {"code": "x", "message": "y"}
    assert "next_poll_at" not in decision.changes
    # Finished somewhere between the poll at 40 s and this one at 60 s: learned as 50 s,
    # and noticed at most 20 s late.
    assert decision.completed_after_s == (50.0 if learned else None)
    assert decision.detection_gap_s == 20.0


@pytest.mark.parametrize(("last_polled_s", "learned_s"), [(60, 60.0), (75, 60.0), (-5, 30.0)])
def test_a_previous_poll_stamped_outside_registration_and_now_teaches_within_them(
    last_polled_s: float, learned_s: float
) -> None:
    """The database clock can step back between two polls (NTP): what is learned still lies
    between registration and this answer, 60 s after it."""
    decision = run(task(last_polled_s=last_polled_s), seen(TaskStatus.SUCCEEDED))
    assert decision.completed_after_s == learned_s


def test_a_task_error_fails_the_task_with_its_code() -> None:
    error = TaskError("no such task", code="2013", raw={"base_resp": {"status_code": 2013}})
    decision = run(task(), PollResult(error=error))
    [transition] = decision.transitions
    assert transition.status is TaskStatus.FAILED
    assert transition.error == {"code": "2013", "message": "no such task"}
    assert decision.changes["last_response"] == {"base_resp": {"status_code": 2013}}
    assert decision.completed_after_s is None
    assert decision.detection_gap_s == 20.0


def test_a_task_error_without_a_code_says_task_error() -> None:
    [transition] = run(task(), PollResult(error=TaskError("refused"))).transitions
    assert transition.error == {"code": "task_error", "message": "refused"}


@pytest.mark.parametrize(
    ("error", "reason", "minimum_s"),
    [
        (
            TransientError("timeout", code="timeout"),
            "transient_error",
            plans.error_delay(MINIMAX, 2),
        ),
        (RateLimited("slow", code="1002", retry_after_s=90), "rate_limited", 90.0),
    ],
)
def test_a_transient_error_backs_off_and_shows_why_the_task_waits(
    error: TransientError, reason: str, minimum_s: float
) -> None:
    decision = run(task(consecutive_errors=1), PollResult(error=error, sent=True))
    assert decision.transitions == ()
    changes = decision.changes
    assert changes["consecutive_errors"] == 2
    assert changes["poll_error"]["reason"] == reason
    assert changes["poll_error"]["code"] == error.code
    assert changes["poll_error"]["at"] == NOW.isoformat()
    gap = (changes["next_poll_at"] - NOW).total_seconds()
    assert gap >= minimum_s * (1 - plans.JITTER)
    # An error's raw answer is kept only when there is one.
    assert "last_response" not in changes
    assert "unchanged_polls" not in changes


def test_a_credential_error_parks_the_task_without_aging_it() -> None:
    """Past its deadline and all: the task waits for a working key, it is not timed out."""
    error = CredentialError("invalid api key", code="1004", raw={"status_code": 1004})
    decision = run(task(deadline_in_s=-10, consecutive_errors=2), PollResult(error=error))
    assert decision.transitions == ()
    changes = decision.changes
    assert "consecutive_errors" not in changes
    assert changes["poll_error"]["reason"] == "auth_failed"
    assert changes["last_response"] == {"status_code": 1004}
    gap = (changes["next_poll_at"] - NOW).total_seconds()
    assert AUTH_RETRY_S * (1 - plans.JITTER) <= gap <= AUTH_RETRY_S * (1 + plans.JITTER)


@pytest.mark.parametrize(
    ("result", "moves"),
    [
        (seen(TaskStatus.PROCESSING), [TaskStatus.TIMED_OUT]),
        # Seen processing for the first time at its deadline: both changes, both events.
        (seen(TaskStatus.PROCESSING), [TaskStatus.PROCESSING, TaskStatus.TIMED_OUT]),
        (PollResult(error=TransientError("boom")), [TaskStatus.TIMED_OUT]),
        # An ending answer at the deadline is the answer.
        (seen(TaskStatus.SUCCEEDED), [TaskStatus.SUCCEEDED]),
    ],
    ids=["running", "first-seen-running", "error", "succeeded"],
)
def test_at_its_deadline_a_running_task_times_out(
    result: PollResult, moves: list[TaskStatus]
) -> None:
    status = TaskStatus.QUEUED if TaskStatus.PROCESSING in moves[:-1] else TaskStatus.PROCESSING
    decision = run(task(status, deadline_in_s=0), result)
    assert statuses(decision) == moves
    if moves[-1] is TaskStatus.TIMED_OUT:
        assert decision.transitions[-1].error == DEADLINE_EXCEEDED
    assert "next_poll_at" not in decision.changes
    # A deadline is pollhook's own: there was nothing upstream to notice late.
    assert decision.detection_gap_s == (None if moves[-1] is TaskStatus.TIMED_OUT else 20.0)


@pytest.mark.parametrize("sent", [True, False])
def test_only_a_sent_request_counts_as_a_poll(sent: bool) -> None:
    decision = run(task(), PollResult(error=TransientError("slot missed"), sent=sent))
    assert decision.changes.get("polls") == (4 if sent else None)
    assert ("last_polled_at" in decision.changes) is sent
    # The claim is given back either way.
    assert decision.changes["lease_owner"] is None
    assert decision.changes["lease_expires_at"] is None


@pytest.mark.parametrize("poll_again", [False, True])
def test_a_callback_during_the_poll_brings_the_next_one_to_the_floor(poll_again: bool) -> None:
    polled = replace(task(), poll_again=poll_again)
    changes = run(polled, seen(TaskStatus.PROCESSING)).changes
    gap = (changes["next_poll_at"] - NOW).total_seconds()
    planned = plans.plan_next(MINIMAX, age_s=60, unchanged_polls=3, model=None)
    assert changes["poll_again"] is False
    if poll_again:
        assert gap == MINIMAX.min_poll_interval_s
    else:
        assert gap >= planned * (1 - plans.JITTER)


def test_a_poll_that_sent_nothing_keeps_the_callbacks_request() -> None:
    polled = replace(task(), poll_again=True)
    result = PollResult(error=TransientError("slot missed", code="slot_missed"), sent=False)
    assert "poll_again" not in run(polled, result).changes
