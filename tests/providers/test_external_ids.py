"""Table tests of upstream task-ID validation (app/providers/external_ids.py)."""

from __future__ import annotations

import pytest

from app.core.config import ProviderKind
from app.providers.external_ids import InvalidExternalId
from app.providers.registry import normalize_external_id

MINIMAX = ProviderKind.MINIMAX_T2A
JIMMY = ProviderKind.JIMMY_SOUNDCLONE


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (MINIMAX, 95157322514444, "95157322514444"),
        (MINIMAX, "95157322514444", "95157322514444"),
        (MINIMAX, "007", "7"),
        (MINIMAX, 2**63 - 1, str(2**63 - 1)),
        (JIMMY, "audio_16b635ba", "audio_16b635ba"),
        (
            JIMMY,
            "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a",
            "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a",
        ),
        (JIMMY, "a?b#c%d", "a?b#c%d"),  # escaped into one path segment by the adapter
        (JIMMY, "a..b", "a..b"),
        (JIMMY, ".hidden", ".hidden"),
        (JIMMY, "...x", "...x"),
        (JIMMY, "声音_1", "声音_1"),
        (JIMMY, "x" * 256, "x" * 256),
    ],
)
def test_external_ids_accepted(kind: ProviderKind, raw: object, expected: str) -> None:
    assert normalize_external_id(kind, raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (MINIMAX, "", "must not be empty"),
        (MINIMAX, "0", "positive 64-bit integer"),
        (MINIMAX, -1, "positive 64-bit integer"),
        (MINIMAX, 2**63, "outside the 64-bit integer range"),
        (MINIMAX, "١٢٣", "decimal digits only"),  # non-ASCII digits
        (MINIMAX, "1e5", "decimal digits only"),
        (MINIMAX, "1" * 300, "at most 256 characters"),
        (MINIMAX, True, "not a boolean"),
        (MINIMAX, 1.0, "as a number or a string"),
        (JIMMY, "", "must not be empty"),
        (JIMMY, 5, "must be a string"),
        (JIMMY, "x" * 257, "at most 256 characters"),
        # Dot segments: httpx (like every URL parser) resolves .../audios/.. to the parent path.
        (JIMMY, ".", "dots only"),
        (JIMMY, "..", "dots only"),
        (JIMMY, "...", "dots only"),
        (JIMMY, "a/b", "'/' or '\\'"),
        (JIMMY, "../audios", "'/' or '\\'"),
        (JIMMY, "a\\b", "'/' or '\\'"),
        (JIMMY, " padded", "space characters (found U+0020 at position 0)"),
        (JIMMY, "in side", "space characters (found U+0020 at position 2)"),
        (JIMMY, "nbsp\xa0", "space characters (found U+00A0"),
        (JIMMY, "tab\there", "control characters (found U+0009"),
        (JIMMY, "del\x7f", "control characters (found U+007F"),
        (JIMMY, "nul\x00", "control characters (found U+0000"),
        (JIMMY, "next\x85line", "control characters (found U+0085"),
        (JIMMY, "audio_\u202ecba", "format characters (found U+202E"),
        (JIMMY, "zero\u200bwidth", "format characters (found U+200B"),
        (JIMMY, "line\u2028sep", "line separator characters (found U+2028"),
        (JIMMY, "para\u2029sep", "paragraph separator characters (found U+2029"),
        (JIMMY, "private\ue000", "private-use characters (found U+E000"),
        (JIMMY, "unassigned\U000e0fff", "unassigned characters (found U+E0FFF"),
        (JIMMY, "a\ud800b", "lone surrogate U+D800 at position 1"),  # Postgres refuses it
    ],
)
def test_external_ids_rejected_with_the_rule_named(
    kind: ProviderKind, raw: object, reason: str
) -> None:
    with pytest.raises(InvalidExternalId) as refused:
        normalize_external_id(kind, raw)
    assert reason in str(refused.value)
