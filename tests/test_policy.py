"""Table tests for the pure policy code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.core.config import ProviderKind
from app.core.errors import ValidationFailed
from app.core.pagination import decode_cursor, encode_cursor
from app.models import TaskStatus
from app.providers.external_ids import InvalidExternalId, normalize_external_id
from app.tasks.policy import can_transition, event_type

S = TaskStatus


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (S.PENDING, S.QUEUED, True),
        (S.PENDING, S.PROCESSING, True),
        (S.PENDING, S.SUCCEEDED, True),
        (S.QUEUED, S.PROCESSING, True),
        (S.QUEUED, S.FAILED, True),
        (S.PROCESSING, S.SUCCEEDED, True),
        (S.PROCESSING, S.EXPIRED, True),
        (S.PROCESSING, S.TIMED_OUT, True),
        (S.PROCESSING, S.CANCELLED, True),
        (S.PENDING, S.PENDING, False),
        (S.PROCESSING, S.PROCESSING, False),
        (S.PROCESSING, S.QUEUED, False),
        (S.QUEUED, S.PENDING, False),
        *[
            (t, n, False)
            for t in (S.SUCCEEDED, S.FAILED, S.EXPIRED, S.TIMED_OUT, S.CANCELLED)
            for n in S
        ],
    ],
)
def test_transitions(current: TaskStatus, new: TaskStatus, allowed: bool) -> None:
    assert can_transition(current, new) is allowed


def test_event_types() -> None:
    assert [event_type(s) for s in S if s.is_terminal] == [
        "task.succeeded",
        "task.failed",
        "task.expired",
        "task.timed_out",
        "task.cancelled",
    ]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (ProviderKind.MINIMAX_T2A, 95157322514444, "95157322514444"),
        (ProviderKind.MINIMAX_T2A, "95157322514444", "95157322514444"),
        (ProviderKind.MINIMAX_T2A, "007", "7"),
        (ProviderKind.MINIMAX_T2A, 2**63 - 1, str(2**63 - 1)),
        (ProviderKind.JIMMY_SOUNDCLONE, "audio_16b635ba", "audio_16b635ba"),
        (ProviderKind.JIMMY_SOUNDCLONE, "a/b?c", "a/b?c"),
        (ProviderKind.JIMMY_SOUNDCLONE, "x" * 256, "x" * 256),
    ],
)
def test_external_ids_accepted(kind: ProviderKind, raw: object, expected: str) -> None:
    assert normalize_external_id(kind, raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (ProviderKind.MINIMAX_T2A, ""),
        (ProviderKind.MINIMAX_T2A, "0"),
        (ProviderKind.MINIMAX_T2A, -1),
        (ProviderKind.MINIMAX_T2A, 2**63),
        (ProviderKind.MINIMAX_T2A, "١٢٣"),  # non-ASCII digits
        (ProviderKind.MINIMAX_T2A, "1e5"),
        (ProviderKind.MINIMAX_T2A, "1" * 300),
        (ProviderKind.MINIMAX_T2A, True),
        (ProviderKind.MINIMAX_T2A, 1.0),
        (ProviderKind.JIMMY_SOUNDCLONE, ""),
        (ProviderKind.JIMMY_SOUNDCLONE, 5),
        (ProviderKind.JIMMY_SOUNDCLONE, "x" * 257),
        (ProviderKind.JIMMY_SOUNDCLONE, " padded"),
        (ProviderKind.JIMMY_SOUNDCLONE, "tab\there"),
        (ProviderKind.JIMMY_SOUNDCLONE, "del\x7f"),
        (ProviderKind.JIMMY_SOUNDCLONE, "a\ud800b"),  # lone surrogate: Postgres refuses it
    ],
)
def test_external_ids_rejected(kind: ProviderKind, raw: object) -> None:
    with pytest.raises(InvalidExternalId):
        normalize_external_id(kind, raw)


def test_cursor_round_trip() -> None:
    stamp, row_id = datetime(2026, 11, 21, 5, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(stamp, row_id)) == (stamp, row_id)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "e30", "WyJ4IiwieSJd", "WyIyMDI2LTExLTIxVDA1OjAwOjAwIiwieCJd", "bnVsbA"]
)
def test_invalid_cursors(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.details == [{"field": "cursor", "message": "invalid cursor"}]
