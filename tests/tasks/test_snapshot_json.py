"""The registration routes answer with `snapshot_fields` serialized directly
(`app/tasks/endpoints.py`): the bytes must be the ones the models would give, for every
shape a stored task can have."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast, get_type_hints

import pytest
from pydantic_core import to_json

from app.core.schemas import ErrorDetail
from app.models import Task
from app.tasks.schemas import TaskBatchItem, TaskBatchResult, TaskRead
from app.webhooks.events import TaskSnapshot, TaskSnapshotFields, snapshot_fields

NOW = datetime(2026, 12, 3, 16, 40, 1, 123456, tzinfo=UTC)


def task(**fields: Any) -> Task:
    values: dict[str, Any] = {
        "id": uuid.UUID("6d1f0e0a-1b2c-4d3e-8f40-5a6b7c8d9e0f"),
        "tenant": "acme",
        "provider": "minimax",
        "external_id": "95157322514444",
        "status": "pending",
        "result": None,
        "error": None,
        "metadata_": {"source": "test", "n": 1},
        "callback_url": None,
        "deadline_s": None,
        "size_hint": None,
        "polls": 0,
        "sequence": 0,
        "created_at": NOW,
        "updated_at": NOW,
        "completed_at": None,
        "next_poll_at": NOW + timedelta(seconds=3),
        "estimated_ready_at": None,
        "deadline_at": NOW + timedelta(hours=6),
        "poll_error": None,
    }
    values.update(fields)
    return Task(**values)


TASKS = [
    pytest.param(task(), id="fresh"),
    pytest.param(
        task(
            metadata_={
                "ünïcode": '文字 \u2028 "quoted" \\',
                "f": 1.5e300,
                "small": 1e-7,
                "big": 2**70,
                "nested": [{"a": None, "b": True}],
                "empty": {},
            },
            callback_url="https://example.com/hooks?a=1&b=2",
            size_hint=1200,
            deadline_s=60,
            estimated_ready_at=NOW.replace(microsecond=0),
            created_at=NOW.astimezone(timezone(timedelta(hours=5, minutes=30))),
        ),
        id="metadata-and-options",
    ),
    pytest.param(task(metadata_=None), id="no-metadata"),
    pytest.param(
        task(
            status="succeeded",
            polls=7,
            sequence=3,
            completed_at=NOW,
            next_poll_at=None,
            result={
                "kind": "minimax_t2a",
                "file_id": "95157322514496",
                "download_url": "https://example.invalid/f.tar",
                "download_url_expires_at": "2026-12-04T01:40:01Z",
                "filename": None,
            },
        ),
        id="succeeded",
    ),
    pytest.param(task(result={"kind": "unknown"}, status="succeeded"), id="unreadable-result"),
    pytest.param(task(status="failed", error={"code": "1004", "message": "refused"}), id="failed"),
    pytest.param(
        task(
            status="processing",
            poll_error={
                "reason": "transient_error",
                "code": "timeout",
                "message": "the provider did not answer",
                "at": "2026-12-03T16:40:02.5+00:00",
            },
        ),
        id="poll-error",
    ),
    pytest.param(task(poll_error={"reason": "from-a-newer-version"}), id="unreadable-poll-error"),
]


def test_the_typed_fields_are_the_models_fields() -> None:
    # mypy checks `snapshot_fields` against the TypedDict: it must declare what the model
    # does, in the model's order (the JSON's).
    declared = get_type_hints(TaskSnapshotFields, include_extras=True)
    model = {name: field.annotation for name, field in TaskSnapshot.model_fields.items()}
    assert list(declared.items()) == list(model.items())


@pytest.mark.parametrize("stored", TASKS)
def test_the_fields_serialize_as_the_models_do(stored: Task) -> None:
    fields = snapshot_fields(stored)
    assert to_json(fields) == TaskSnapshot.from_task(stored).model_dump_json().encode()
    assert to_json(fields) == TaskRead.from_task(stored).model_dump_json().encode()


def test_a_batch_answer_serializes_as_the_model_does() -> None:
    stored = [cast(Task, param.values[0]) for param in TASKS]
    error = ErrorDetail(
        code="validation_error",
        message="external_id: must be a positive 64-bit integer",
        details=[{"field": "external_id", "message": "must be a positive 64-bit integer"}],
    )
    items: list[dict[str, Any]] = [
        {"status": "created", "task": snapshot_fields(t), "error": None} for t in stored
    ]
    items.append({"status": "error", "task": None, "error": error})
    models = [TaskBatchItem(status="created", task=TaskRead.from_task(t)) for t in stored] + [
        TaskBatchItem(status="error", error=error)
    ]
    assert to_json({"results": items}) == TaskBatchResult(results=models).model_dump_json().encode()
