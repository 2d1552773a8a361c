from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.models import Event
from app.tasks.schemas import PollRead
from app.ui.timeline import Entry, delivery_attempts, events, polls, preview, summary, timeline
from app.webhooks.events import EventType
from app.webhooks.schemas import AttemptRead, DeliveryRead, DeliveryStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        (None, 200, None),
        ("short", 200, "short"),
        ("x" * 200, 200, "x" * 200),
        ("x" * 201, 200, "x" * 200 + "…"),
        # A character split by the limit is left out, not sent as half of itself.
        ("ab" + "é" * 10, 5, "abé…"),
    ],
)
def test_preview(text: str | None, limit: int, expected: str | None) -> None:
    assert preview(text, limit) == expected


def test_summary_is_one_line_of_sorted_json() -> None:
    assert summary(None) is None
    assert summary({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def _delivery(*attempts: AttemptRead) -> DeliveryRead:
    return DeliveryRead(
        id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        event_type=EventType.SUCCEEDED,
        task_id=uuid.uuid4(),
        tenant="acme",
        endpoint_id=None,
        url="http://127.0.0.1:9/hook",
        status=DeliveryStatus.SUCCEEDED,
        attempts=len(attempts),
        next_attempt_at=None,
        last_status_code=200,
        last_error=None,
        created_at=T0,
        completed_at=None,
        attempt_log=list(attempts),
    )


def test_timeline_merges_the_sources_oldest_first() -> None:
    event = Event(
        id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        tenant="acme",
        type="task.succeeded",
        sequence=1,
        payload={},
        created_at=T0 + timedelta(seconds=5),
    )
    failed = AttemptRead(
        attempt=1,
        attempted_at=T0 + timedelta(seconds=6),
        duration_ms=12,
        status_code=500,
        response_body="e" * 300,
        error=None,
    )
    ok = AttemptRead(
        attempt=2,
        attempted_at=T0 + timedelta(seconds=9),
        duration_ms=3,
        status_code=204,
        response_body=None,
        error=None,
    )
    refused = AttemptRead(
        attempt=1,
        attempted_at=T0 + timedelta(seconds=7),
        duration_ms=1,
        status_code=None,
        response_body=None,
        error="connection refused",
    )
    registered = [Entry(at=T0, kind="registered", title="registered")]
    log = [
        PollRead.model_validate(entry)
        for entry in [
            {
                "at": T0 + timedelta(seconds=2),
                "poll": 1,
                "status": "pending",
                "upstream_status": None,
                "error": {
                    "reason": "transient_error",
                    "code": "http_503",
                    "message": "Service Unavailable",
                    "at": T0 + timedelta(seconds=2),
                },
            },
            {
                "at": T0 + timedelta(seconds=4),
                "poll": 2,
                "status": "succeeded",
                "upstream_status": "Success",
                "error": None,
            },
        ]
    ]
    merged = timeline(
        registered,
        polls(log),
        events([event]),
        delivery_attempts([_delivery(ok, failed), _delivery(refused)]),
    )
    assert [(e.kind, e.tone) for e in merged] == [
        ("registered", "info"),
        ("poll", "bad"),
        ("poll", "info"),
        ("event", "good"),
        ("delivery", "bad"),
        ("delivery", "bad"),
        ("delivery", "good"),
    ]
    assert merged[1].detail == "transient_error (http_503): Service Unavailable"
    assert merged[2].title == "poll 2: succeeded, provider said 'Success'"
    assert "HTTP 500 in 12 ms" in merged[4].title
    assert merged[4].detail == "e" * 200 + "…"
    assert "no answer" in merged[5].title
    assert merged[5].detail == "connection refused"
