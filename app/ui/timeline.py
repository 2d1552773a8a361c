"""A task's timeline on its page: what happened to it, oldest first, from each source of
history it has. Pure: each source maps its rows to entries, and `timeline` merges them. A new
source is one more function and one more argument."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from app.models import Event
from app.tasks.schemas import PollRead, TaskRead
from app.webhooks.events import PollError
from app.webhooks.schemas import DeliveryRead

# How much of a webhook receiver's answer (or of an error) an entry shows.
PREVIEW_BYTES = 200

Tone = Literal["info", "good", "bad"]


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: Literal["registered", "poll", "event", "delivery"]
    title: str
    detail: str | None = None
    tone: Tone = "info"


def preview(text: str | None, limit: int = PREVIEW_BYTES) -> str | None:
    """The first `limit` bytes of `text` (UTF-8), cut at a character boundary."""
    if text is None:
        return None
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore") + "…"


def summary(value: dict[str, Any] | None, limit: int = PREVIEW_BYTES) -> str | None:
    """A JSON object (an upstream's answer, a poll error) on one line, cut to `limit` bytes."""
    if value is None:
        return None
    return preview(json.dumps(value, separators=(",", ":"), sort_keys=True), limit)


def registered(task: TaskRead) -> list[Entry]:
    return [Entry(at=task.created_at, kind="registered", title="registered")]


_EVENT_TONES: dict[str, Tone] = {
    "task.succeeded": "good",
    "task.archived": "good",
    "task.failed": "bad",
    "task.expired": "bad",
    "task.timed_out": "bad",
}


def events(rows: Sequence[Event]) -> list[Entry]:
    return [
        Entry(
            at=row.created_at,
            kind="event",
            title=row.type,
            detail=f"sequence {row.sequence}",
            tone=_EVENT_TONES.get(row.type, "info"),
        )
        for row in rows
    ]


def poll_error(error: PollError | None) -> str | None:
    """Why a poll got no answer, as one line: `auth_failed (missing_key): no API key ...`."""
    if error is None:
        return None
    return preview(f"{error.reason} ({error.code or 'no code'}): {error.message}")


def polls(log: Sequence[PollRead]) -> list[Entry]:
    entries = []
    for poll in log:
        said = f", provider said {poll.upstream_status!r}" if poll.upstream_status else ""
        entries.append(
            Entry(
                at=poll.at,
                kind="poll",
                title=f"poll {poll.poll}: {poll.status}{said}",
                detail=poll_error(poll.error),
                tone="bad" if poll.error else "info",
            )
        )
    return entries


def delivery_attempts(deliveries: Sequence[DeliveryRead]) -> list[Entry]:
    entries: list[Entry] = []
    for delivery in deliveries:
        for attempt in delivery.attempt_log:
            ok = attempt.status_code is not None and 200 <= attempt.status_code < 300
            answer = (
                f"HTTP {attempt.status_code}" if attempt.status_code is not None else "no answer"
            )
            entries.append(
                Entry(
                    at=attempt.attempted_at,
                    kind="delivery",
                    title=(
                        f"{delivery.event_type.value} to {delivery.url}: attempt "
                        f"{attempt.attempt}, {answer} in {attempt.duration_ms} ms"
                    ),
                    detail=preview(attempt.error if attempt.error else attempt.response_body),
                    tone="good" if ok else "bad",
                )
            )
    return entries


def timeline(*sources: Iterable[Entry]) -> list[Entry]:
    """Every source's entries, oldest first (a tie keeps the order of the sources)."""
    merged = [entry for source in sources for entry in source]
    return sorted(merged, key=lambda entry: entry.at)
