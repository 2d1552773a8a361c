"""Table and property tests of the strict JSON body parser (app/core/json_body.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.errors import InvalidJson, ServiceError, ValidationFailed
from app.core.json_body import (
    DEPTH_MESSAGE,
    MAX_JSON_DEPTH,
    MAX_REPORTED,
    NUMBER_MESSAGE,
    STRING_MESSAGE,
    parse_json_body,
)


def refusal(raw: bytes | str) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        parse_json_body(raw.encode() if isinstance(raw, str) else raw)
    return info.value


def nested(depth: int, leaf: str = "1") -> str:
    """`depth` levels of objects: {"a":{"a":...1}}; the outer object is level 1."""
    return '{"a":' * depth + leaf + "}" * depth


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ('{"metadata": {"k": NaN}}', "metadata.k", NUMBER_MESSAGE),
        ('{"metadata": {"k": Infinity}}', "metadata.k", NUMBER_MESSAGE),
        ('{"metadata": {"k": -Infinity}}', "metadata.k", NUMBER_MESSAGE),
        ('{"metadata": {"k": 1e400}}', "metadata.k", NUMBER_MESSAGE),
        ('{"metadata": {"k": -1e400}}', "metadata.k", NUMBER_MESSAGE),
        ('{"metadata": {"k": [1, 2, 1.8e308]}}', "metadata.k.2", NUMBER_MESSAGE),
        ("NaN", "body", NUMBER_MESSAGE),
        ('{"metadata": {"k": "a\\u0000b"}}', "metadata.k", STRING_MESSAGE),
        ('{"metadata": {"k": "\\ud800"}}', "metadata.k", STRING_MESSAGE),
        ('{"metadata": {"k": "\\udfff"}}', "metadata.k", STRING_MESSAGE),
        ('{"metadata": {"k": "x\\udc00\\ud800"}}', "metadata.k", STRING_MESSAGE),  # wrong order
        ('{"metadata": {"\\u0000": 1}}', "metadata.\\u0000", f"key {STRING_MESSAGE}"),
        ('{"metadata": {"a\\ud800": 1}}', "metadata.a\\ud800", f"key {STRING_MESSAGE}"),
        ('{"external_id": "\\u0000"}', "external_id", STRING_MESSAGE),
        ('{"events": ["task.failed", "\\ud800"]}', "events.1", STRING_MESSAGE),
        ('"\\u0000"', "body", STRING_MESSAGE),
        ('[[{"x": [{"y": "\\u0000"}]}]]', "0.0.x.0.y", STRING_MESSAGE),
    ],
)
def test_refused_values_name_their_field(raw: str, field: str, message: str) -> None:
    error = refusal(raw)
    assert isinstance(error, ValidationFailed)
    assert error.details == [{"field": field, "message": message}]
    assert error.message == f"{field}: {message}"


def test_raw_utf8_surrogate_bytes_are_refused() -> None:
    """json.loads decodes bytes with surrogatepass: ED A0 80 becomes a lone U+D800."""
    error = refusal(b'{"description": "\xed\xa0\x80"}')
    assert isinstance(error, ValidationFailed)
    assert error.details == [{"field": "description", "message": STRING_MESSAGE}]


@pytest.mark.parametrize(
    "raw",
    [
        '{"metadata": {"k": 1.7976931348623157e308, "n": -1e308, "tiny": 1e-400}}',
        '{"metadata": {"k": "\\ud83d\\ude00 and \\u00e9 and \\uffff and \\u0001"}}',  # a pair
        '{"metadata": {"big": 1' + "0" * 400 + "}}",  # integers are exact, however long
        nested(MAX_JSON_DEPTH),
        "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH,
        '{"a": [], "b": {}, "c": null, "d": true, "e": ""}',
        "[]",
        "1",
    ],
)
def test_accepted_as_json_loads_reads_it(raw: str) -> None:
    assert parse_json_body(raw.encode()) == json.loads(raw)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 256, 500])
def test_nesting_over_the_limit_names_where_it_crosses(depth: int) -> None:
    error = refusal(nested(depth))
    assert isinstance(error, ValidationFailed)
    assert error.details == [{"field": ".".join(["a"] * MAX_JSON_DEPTH), "message": DEPTH_MESSAGE}]


@pytest.mark.parametrize("depth", [10_000, 100_000, 1_000_000])
@pytest.mark.parametrize(("opener", "leaf", "closer"), [("[", "", "]"), ('{"a":', "1", "}")])
def test_nesting_far_over_the_limit_is_refused_without_recursing(
    depth: int, opener: str, leaf: str, closer: str
) -> None:
    error = refusal(opener * depth + leaf + closer * depth)
    assert isinstance(error, ValidationFailed)
    assert error.details == [{"field": "body", "message": DEPTH_MESSAGE}]


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"a": 1,}', b"{'a': 1}", b"\x17\xc3.U\xa3Y", b'{"a": 1} x', b"1" * 5000],
)
def test_not_json_is_invalid_json(raw: bytes) -> None:
    error = refusal(raw)
    assert isinstance(error, InvalidJson)
    assert error.code == "invalid_json"
    assert error.details[0]["field"] == "body"


def test_a_body_full_of_bad_values_names_a_bounded_number_of_fields() -> None:
    error = refusal(json.dumps({"metadata": {f"k{i}": "\x00" for i in range(1000)}}))
    assert isinstance(error, ValidationFailed)
    assert [d["field"] for d in error.details] == [f"metadata.k{i}" for i in range(MAX_REPORTED)]


# --- properties -----------------------------------------------------------------------------

# Any JSON document Postgres jsonb can hold: finite numbers, strings without NUL or lone
# surrogates, within the nesting limit (hypothesis' recursion stays far below it).
STORABLE_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
STORABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | STORABLE_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(STORABLE_TEXT, children, max_size=4)
    ),
    max_leaves=30,
)


@given(STORABLE)
def test_storable_documents_parse_to_what_json_loads_gives(document: Any) -> None:
    raw = json.dumps(document)
    assert parse_json_body(raw.encode()) == json.loads(raw)
    assert parse_json_body(json.dumps(document, ensure_ascii=False).encode()) == json.loads(raw)


BAD_LEAVES = (
    st.sampled_from([math.nan, math.inf, -math.inf])
    | st.text(min_size=1).map(lambda s: s + "\x00")
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
)


@given(STORABLE, BAD_LEAVES, st.text("abcXYZ_09", min_size=1, max_size=3))
def test_one_bad_leaf_anywhere_is_refused_and_named(document: Any, bad: object, key: str) -> None:
    """Hide one bad value in a storable document: it is found, at the path it sits at."""
    wrapped = {"metadata": {"ok": document, "x": [{key: bad}]}}
    error = refusal(json.dumps(wrapped))
    assert isinstance(error, ValidationFailed)
    assert [d["field"] for d in error.details] == [f"metadata.x.0.{key}"]
