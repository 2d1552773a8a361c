from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    StrictInt,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import CoreSchema, core_schema

from app.core.config import MAX_DEADLINE_S
from app.core.schemas import ErrorDetail
from app.models import POLL_LOG_SIZE
from app.webhooks.events import PollError, TaskSnapshot


def _int_or_str(_source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
    # An integer (not a bool, not a float) or a string, as it came, in one check inside the
    # validator: a Python validator here cost a call out of it per task of a batch.
    return core_schema.union_schema(
        [core_schema.int_schema(strict=True), core_schema.str_schema(strict=True)],
        custom_error_type="value_error",
        custom_error_context={"error": "must be an integer or a string"},
    )


ExternalIdIn = Annotated[
    int | str,
    GetPydanticSchema(_int_or_str),
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


class TaskRead(TaskSnapshot):
    """A task, as the API shows it: the same snapshot a webhook carries."""


class TaskList(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# The most tasks one POST /v1/tasks/batch registers.
MAX_BATCH_TASKS = 1000


class TaskBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskCreate] = Field(
        min_length=1,
        max_length=MAX_BATCH_TASKS,
        description=f"1 to {MAX_BATCH_TASKS} registrations, each as POST /v1/tasks takes it.",
    )


class TaskBatchItem(BaseModel):
    """One registration's outcome: `task` unless `status` is `error`, then `error`."""

    status: Literal["created", "existing", "error"] = Field(
        description="`created` (POST /v1/tasks would answer 201), `existing` (200: registered "
        "before with the same parameters, or earlier in this batch) or `error` (the 4xx it "
        "would answer, as `error`; nothing was registered for this item)."
    )
    task: TaskRead | None = None
    error: ErrorDetail | None = None


class TaskBatchResult(BaseModel):
    results: list[TaskBatchItem] = Field(description="One per given task, in the same order.")


class PollRead(BaseModel):
    """One poll of the task, as it left the task."""

    at: datetime
    poll: int = Field(description="The poll's number: the task's `polls` after it.")
    status: str = Field(description="The task's status after the poll.")
    upstream_status: str | None = Field(description="What the provider said, in its words.")
    error: PollError | None = Field(description="Why the poll got no answer, when it did not.")


class PollList(BaseModel):
    items: list[PollRead] = Field(
        description=f"The task's last {POLL_LOG_SIZE} polls at most, oldest first."
    )
