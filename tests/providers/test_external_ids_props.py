"""Properties of upstream task-ID parsing (app/providers/external_ids.py)."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.core.config import ProviderKind
from app.providers.external_ids import (
    INT64_MAX,
    MAX_EXTERNAL_ID_LENGTH,
    InvalidExternalId,
)
from app.providers.registry import normalize_external_id
from tests.properties import PROPERTY

MINIMAX = ProviderKind.MINIMAX_T2A
JIMMY = ProviderKind.JIMMY_SOUNDCLONE

task_ids = st.integers(min_value=1, max_value=INT64_MAX)
# Every code point, lone surrogates included (JSON's "\\ud800" escape decodes to one), with
# the troublesome ones (controls, spaces, surrogates, digits) drawn often.
AWKWARD = ["\x00", "\t", "\x1f", "\x7f", "\x85", " ", "\xa0", "\u2028", "\ud800", "\udfff"]
# (A list, not st.text: text() merges the alphabets into one range and loses the weighting.)
characters = st.characters(exclude_categories=()) | st.sampled_from([*AWKWARD, "0", "7", "a"])
any_text = st.lists(characters, max_size=8).map("".join) | st.lists(characters, max_size=300).map(
    "".join
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | any_text
    | task_ids
    | task_ids.map(str),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=5,
)


def normalized(kind: ProviderKind, raw: object) -> str | None:
    """The canonical id, or None when refused; any other exception fails the test."""
    try:
        return normalize_external_id(kind, raw)
    except InvalidExternalId:
        return None


@settings(PROPERTY, max_examples=200)
@given(task_ids, st.integers(min_value=0, max_value=20))
def test_minimax_ids_are_positive_int64_as_number_or_decimal_string(value: int, zeros: int) -> None:
    assert normalize_external_id(MINIMAX, value) == str(value)
    assert normalize_external_id(MINIMAX, str(value)) == str(value)
    assert normalize_external_id(MINIMAX, "0" * zeros + str(value)) == str(value)


@settings(PROPERTY, max_examples=200)
@given(st.integers(max_value=0) | st.integers(min_value=INT64_MAX + 1, max_value=2**70))
def test_minimax_ids_outside_int64_or_not_positive_are_refused(value: int) -> None:
    assert normalized(MINIMAX, value) is None
    assert normalized(MINIMAX, str(value)) is None


@settings(PROPERTY, max_examples=200)
@given(any_text | json_values)
def test_minimax_parsing_is_canonical_and_only_raises_its_own_error(raw: object) -> None:
    result = normalized(MINIMAX, raw)
    if result is not None:
        assert 1 <= int(result) <= INT64_MAX
        assert result == str(int(result))
        assert normalize_external_id(MINIMAX, result) == result
        assert normalize_external_id(MINIMAX, int(result)) == result


REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


@settings(PROPERTY, max_examples=200)
@given(any_text | json_values)
@example("a\ud800b")  # a lone surrogate: JSON allows the escape, Postgres cannot store it
@example("\udfff")
@example(".")
@example("..")
@example("a/b")
@example("audio_\u202e")
@example("\u2028")
@example("\x85")
def test_jimmy_ids_are_storable_opaque_strings_kept_as_they_are(raw: object) -> None:
    result = normalized(JIMMY, raw)
    if result is None:
        return
    assert result == raw
    assert 1 <= len(result) <= MAX_EXTERNAL_ID_LENGTH
    assert not any(unicodedata.category(ch) in REFUSED_CATEGORIES for ch in result)
    result.encode("utf-8")  # storable as Postgres text (which also refuses NUL, above)
    assert normalize_external_id(JIMMY, result) == result


@settings(PROPERTY, max_examples=200)
@given(any_text | st.sampled_from([".", "..", "...", "a/b", "..\\x"]))
def test_a_jimmy_id_is_one_url_path_segment_that_stays_where_it_is(raw: str) -> None:
    """What the adapter puts in the path (quote(id, safe="")) is one segment that URL
    normalisation leaves alone: never a dot segment, never a separator."""
    result = normalized(JIMMY, raw)
    if result is None:
        return
    segment = quote(result, safe="")
    assert "/" not in segment
    assert "\\" not in segment
    assert segment.strip(".")
    base = "https://jimmy.test/api/open-api/v1/audios/"
    assert (
        httpx.URL(base + segment).raw_path
        == (base + segment).removeprefix("https://jimmy.test").encode()
    )


@settings(PROPERTY, max_examples=200)
@given(
    st.text(
        st.characters(
            exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Z"], exclude_characters="/\\"
        ),
        min_size=1,
        max_size=MAX_EXTERNAL_ID_LENGTH,
    ).filter(lambda text: text.strip("."))
)
def test_jimmy_ids_of_visible_characters_are_accepted(raw: str) -> None:
    assert normalize_external_id(JIMMY, raw) == raw
