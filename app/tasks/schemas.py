from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from app.core.config import MAX_DEADLINE_S
from app.core.logging import get_logger
from app.models import Task, TaskStatus
from app.providers.base import WaitReason
from app.providers.registry import TaskResult

logger = get_logger(__name__)


def _int_or_str(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    return value


ExternalIdIn = Annotated[
    int | str,
    PlainValidator(_int_or_str),
    WithJsonSchema(
        {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "The provider's task ID. MiniMax: a positive 64-bit integer (number "
            "or decimal string). Jimmy: an opaque non-empty string of at most 256 characters "
            "that stays one URL path segment: not only dots, no '/' or '\\', no control, "
            "format, separator or whitespace characters.",
            "examples": [95157322514444, "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a"],
        }
    ),
]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Annotated[str, Field(min_length=1, max_length=64, examples=["minimax"])]
    external_id: ExternalIdIn
    callback_url: Annotated[
        str | None,
        Field(
            max_length=2048,
            description="Also receives this task's terminal webhook, signed with the tenant's "
            "signing secret (GET /v1/signing-secret).",
            examples=["https://example.com/hooks/pollhook"],
        ),
    ] = None
    metadata: Annotated[
        dict[str, Any] | None,
        Field(description="Free-form JSON object, at most 16 KiB, returned with the task."),
    ] = None
    deadline_s: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=MAX_DEADLINE_S,
            description="Stop tracking (status timed_out) this many seconds after "
            "registration. Default: the provider instance's deadline_s.",
        ),
    ] = None
    size_hint: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=10**12,
            description="How big the task is, in any unit that grows with its work (MiniMax "
            "T2A: characters of text; Jimmy: seconds of source audio). Optional: completion "
            "times are then learned per size class, which predicts them more sharply.",
            examples=[1200],
        ),
    ] = None

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        return value


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


class TaskRead(BaseModel):
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
    sequence: int = Field(description="Increments on every status change.")
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

    @classmethod
    def from_task(cls, task: Task) -> TaskRead:
        return cls(
            id=task.id,
            provider=task.provider,
            external_id=task.external_id,
            status=TaskStatus(task.status),
            result=_stored_result(task),
            error=TaskError.model_validate(task.error) if task.error else None,
            metadata=task.metadata_ or {},
            callback_url=task.callback_url,
            polls=task.polls,
            sequence=task.sequence,
            created_at=task.created_at,
            updated_at=task.updated_at,
            completed_at=task.completed_at,
            next_poll_at=task.next_poll_at,
            estimated_ready_at=task.estimated_ready_at,
            size_hint=task.size_hint,
            deadline_at=task.deadline_at,
            last_poll_error=_stored_poll_error(task),
        )


def _stored_poll_error(task: Task) -> PollError | None:
    """None, not a 500, for a shape this version does not know (a newer reason, say)."""
    if task.poll_error is None:
        return None
    try:
        return PollError.model_validate(task.poll_error)
    except ValidationError:
        logger.warning("task.poll_error_unreadable", task_id=str(task.id))
        return None


_RESULT = TypeAdapter[TaskResult | None](TaskResult | None)


def _stored_result(task: Task) -> TaskResult | None:
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


class TaskList(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
