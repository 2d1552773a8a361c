"""What a webhook carries: the event types, the task snapshot in `data`, and the body.

Consumers get these bytes; `GET /v1/tasks/{id}` shows the same snapshot
(`app/tasks/schemas.py` TaskRead). Built from the task row alone, so the outbox write
(`app/tasks/service.py`) needs nothing of the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self, TypedDict

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.blobs.views import ArchiveLinks, ArchiveState
from app.core.logging import get_logger
from app.models import TaskStatus, TaskView
from app.providers.base import WaitReason
from app.providers.registry import TaskResult

logger = get_logger(__name__)


class EventType(StrEnum):
    QUEUED = "task.queued"
    PROCESSING = "task.processing"
    SUCCEEDED = "task.succeeded"
    FAILED = "task.failed"
    EXPIRED = "task.expired"
    TIMED_OUT = "task.timed_out"
    CANCELLED = "task.cancelled"
    ARCHIVED = "task.archived"
    TEST = "webhook.test"


TERMINAL_EVENT_TYPES = frozenset(
    {
        EventType.SUCCEEDED,
        EventType.FAILED,
        EventType.EXPIRED,
        EventType.TIMED_OUT,
        EventType.CANCELLED,
    }
)

# Sent to endpoints that name no event types, and to a task's callback_url.
DEFAULT_EVENT_TYPES = TERMINAL_EVENT_TYPES | {EventType.ARCHIVED}

# When each event is sent, for the OpenAPI document's `webhooks` and the README.
EVENT_DESCRIPTIONS: dict[EventType, str] = {
    EventType.QUEUED: "The provider has queued the task (not every provider reports this).",
    EventType.PROCESSING: "The provider is working on the task.",
    EventType.SUCCEEDED: "The task finished at the provider; `data.result` holds what it made.",
    EventType.FAILED: "The provider reported a failure, or refused the task; see `data.error`.",
    EventType.EXPIRED: "The provider reported the task expired.",
    EventType.TIMED_OUT: "The task was still running at its `deadline_at`; pollhook stopped "
    "polling it.",
    EventType.CANCELLED: "A client stopped tracking the task (`DELETE /v1/tasks/{id}`).",
    EventType.ARCHIVED: "The task's result files are in pollhook's archive "
    "(`data.result.archive`), after `task.succeeded` went out without them: the copy took "
    "longer than POLLHOOK_ARCHIVE__WAIT_S. Not sent when the succeeded event waited for it.",
    EventType.TEST: "Someone asked for a test (`POST /v1/webhooks/{id}/test`, or the dashboard); "
    "sent to that endpoint only, whatever its `events`, signed and retried like any other. "
    "`data` names the endpoint, not a task.",
}


class WebhookEvent(BaseModel):
    """The body of every delivery. Every attempt of one event sends the same bytes."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    timestamp: datetime = Field(description="When the status changed.")
    data: TaskSnapshot = Field(
        description="The task as `GET /v1/tasks/{id}` showed it right after the change. "
        "Drop an event whose `data.sequence` is not above the last one seen for the task."
    )


class EndpointTestData(BaseModel):
    endpoint_id: uuid.UUID
    tenant: str
    requested_by: str = Field(description="Who asked for the test, as the audit log names them.")


class EndpointTestEvent(BaseModel):
    """The body of a `webhook.test` delivery."""

    model_config = ConfigDict(extra="forbid")

    type: Literal[EventType.TEST]
    timestamp: datetime = Field(description="When the test was asked for.")
    data: EndpointTestData


class TaskError(BaseModel):
    code: str | None = Field(description="The provider's own code, or pollhook's.")
    message: str


class PollError(BaseModel):
    """The last poll's error, while the task waits for the next one."""

    reason: WaitReason = Field(
        description="`auth_failed`: the provider refused the instance's key (missing, wrong, "
        "or out of balance); polling resumes when a restart brings another key, or every "
        "POLLHOOK_ENGINE__AUTH_RETRY_S. `rate_limited`: the provider asked pollhook to slow "
        "down. `result_not_ready`: the provider says the task is done but has not handed its "
        "result over yet (retried a bounded number of polls). `transient_error`: a timeout, "
        "a connection error, a 5xx or an answer pollhook could not read; retried with backoff."
    )
    code: str | None = Field(description="The provider's code, or pollhook's (`timeout`, …).")
    message: str = Field(description="What the provider said; credentials are cut out.")
    at: datetime


class TaskSnapshot(BaseModel):
    """A task as it stands: the `data` of every webhook, taken right after the change it
    announces, and what `GET /v1/tasks/{id}` shows."""

    id: uuid.UUID
    provider: str
    external_id: str
    status: TaskStatus
    result: TaskResult | None = Field(
        description="What the provider handed over, once the task succeeded: its fields "
        "depend on the provider kind, named by `kind`. Null until then."
    )
    error: TaskError | None
    metadata: dict[str, Any]
    callback_url: str | None
    polls: int
    sequence: int = Field(
        description="Increments on every status change, and when the archive completes "
        "after the terminal event went out (`task.archived`)."
    )
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    next_poll_at: datetime | None
    estimated_ready_at: datetime | None = Field(
        description="When the task is expected to finish upstream: the median of the "
        "instance's learned completion times (of its size class when size_hint was given), "
        "given how long the task has run already. Null until the instance has seen enough "
        "completions, when the task has outlived 99 % of them, and once it is terminal."
    )
    size_hint: int | None
    deadline_at: datetime
    last_poll_error: PollError | None = Field(
        description="Why the task is still waiting: the last poll's error, until the next "
        "answer from the provider clears it. Null when the last poll got an answer, and once "
        "the task has ended."
    )

    archive: ArchiveState | None = Field(
        description="Where the copy of the result files into pollhook's archive stands; "
        "the files are in `result.archive`. Null when the archive is off for the task's "
        "provider instance, or the task has no result files."
    )

    @classmethod
    def from_task(cls, task: TaskView) -> Self:
        return cls(**snapshot_fields(task))


class TaskSnapshotFields(TypedDict):
    """`TaskSnapshot`'s fields as a plain dict, for mypy to check what `snapshot_fields`
    builds: the same names in the same order (the order of the JSON), each of the type its
    field validates to. `tests/tasks/test_snapshot_json.py` holds it equal to the model."""

    id: uuid.UUID
    provider: str
    external_id: str
    status: TaskStatus
    result: TaskResult | None
    error: TaskError | None
    metadata: dict[str, Any]
    callback_url: str | None
    polls: int
    sequence: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    next_poll_at: datetime | None
    estimated_ready_at: datetime | None
    size_hint: int | None
    deadline_at: datetime
    last_poll_error: PollError | None
    archive: ArchiveState | None


def snapshot_fields(task: TaskView) -> TaskSnapshotFields:
    """A task's snapshot as the fields of `TaskSnapshot`, each already the value its field
    validates to: `TaskSnapshot(**fields)` is the model, and `pydantic_core.to_json(fields)`
    the same bytes as the model's JSON without building it (the registration routes answer
    a thousand of them at once; `tests/tasks/test_snapshot_json.py` holds the two equal).
    A dict literal, not a model: a TypedDict costs nothing at run time."""
    return {
        "id": task.id,
        "provider": task.provider,
        "external_id": task.external_id,
        "status": TaskStatus(task.status),
        "result": _stored_result(task),
        "error": TaskError.model_validate(task.error) if task.error else None,
        "metadata": task.metadata_ or {},
        "callback_url": task.callback_url,
        "polls": task.polls,
        "sequence": task.sequence,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "completed_at": task.completed_at,
        "next_poll_at": task.next_poll_at,
        "estimated_ready_at": task.estimated_ready_at,
        "size_hint": task.size_hint,
        "deadline_at": task.deadline_at,
        "last_poll_error": _stored_poll_error(task),
        "archive": ArchiveLinks.state(task.archive),
    }


def _stored_poll_error(task: TaskView) -> PollError | None:
    """None, not a 500, for a shape this version does not know (a newer reason, say)."""
    if task.poll_error is None:
        return None
    try:
        return PollError.model_validate(task.poll_error)
    except ValidationError:
        logger.warning("task.poll_error_unreadable", task_id=str(task.id))
        return None


_RESULT = TypeAdapter[TaskResult | None](TaskResult | None)


def _stored_result(task: TaskView) -> TaskResult | None:
    """The stored result, or None (logged) when this version cannot read it: a task must
    stay readable whatever an older version wrote."""
    if task.result is None:
        return None
    try:
        return _RESULT.validate_python(task.result)
    except ValidationError as exc:
        logger.warning(
            "task.result_unreadable",
            task_id=str(task.id),
            provider=task.provider,
            errors=exc.error_count(),
            detail=str(exc)[:300],
        )
        return None


@dataclass(frozen=True)
class NewEvent:
    """A status change's event, about to be written with its outbox deliveries in the
    transaction of the change (`app/tasks/service.py` transition and write_events)."""

    id: uuid.UUID
    task_id: uuid.UUID
    tenant: str
    type: EventType
    sequence: int
    payload: dict[str, Any]
    # The task's own callback, sent terminal events only.
    callback_url: str | None
    # Deliveries wait this long before their first attempt: a succeeded event waits for
    # the archive (which sends it as soon as it is done).
    hold_s: float = 0.0
