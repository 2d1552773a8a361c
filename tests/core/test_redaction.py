"""The redactor finds a secret in every spelling an upstream or a log line may use."""

from __future__ import annotations

import json
import random
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.core.redaction import REDACTED, Redactor

KEY = "sk-live/9Zq_é"


def json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize(
    ("spelled", "why"),
    [
        (KEY, "as typed"),
        (json.dumps(KEY)[1:-1], "JSON, non-ASCII escaped"),
        (json.dumps(KEY)[1:-1].replace("/", "\\/"), "JSON, solidus escaped"),
        (json_escaped(KEY), "JSON, every character escaped"),
        (json_escaped(KEY).upper().replace("\\U", "\\u"), "JSON, upper-case hex"),
        (quote(KEY, safe=""), "percent-encoded"),
        ("".join(f"&#{ord(c)};" for c in KEY), "HTML decimal references"),
        ("".join(f"&#x{ord(c):x};" for c in KEY), "HTML hex references"),
        ("sk-live\\u002f9Zq_%C3%A9", "spellings mixed within one occurrence"),
    ],
)
def test_every_spelling_is_cut(spelled: str, why: str) -> None:
    text = f'{{"error": "invalid key {spelled} for this region"}}'
    assert Redactor([KEY]).text(text) == f'{{"error": "invalid key {REDACTED} for this region"}}'


@pytest.mark.parametrize(
    "text",
    [
        "sk-live/9Zq_e",  # one character differs
        "sk-live/9Zq",  # a prefix
        "http://127.0.0.1:8900/_sandbox/files/1.tar",
    ],
)
def test_text_without_the_key_is_unchanged(text: str) -> None:
    assert Redactor([KEY]).text(text) == text


def test_json_values_keys_included() -> None:
    redactor = Redactor([KEY, "short"])
    value = {"msg": f"bad {KEY}", KEY: [1, "x short y", {"n": None}], "ok": True}
    assert redactor.json(value) == {
        "msg": f"bad {REDACTED}",
        REDACTED: [1, f"x {REDACTED} y", {"n": None}],
        "ok": True,
    }


def test_a_secret_inside_another_goes_whole() -> None:
    assert Redactor(["abc", "xxabcxx"]).text("-xxabcxx-abc-") == f"-{REDACTED}-{REDACTED}-"


def test_no_secrets_is_the_identity() -> None:
    redactor = Redactor([None, ""])
    assert not redactor
    value = {"a": ["b"]}
    assert redactor.json(value) is value


def test_deeply_nested_values_do_not_crash() -> None:
    value: object = "x"
    for _ in range(5000):
        value = [value]
    assert Redactor([KEY]).json(value) == REDACTED


def _spell(char: str, how: int) -> str:
    if how == 0:
        return char
    if how == 1 and ord(char) <= 0xFFFF:
        return f"\\u{ord(char):04X}"
    if how == 2:
        return quote(char, safe="")
    return f"&#{ord(char)};"


@example(key="r", around="", seed=0)  # a key inside the marker's own text
@given(
    key=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40),
    around=st.text(max_size=20),
    seed=st.integers(0, 2**32),
)
def test_property_any_mix_of_spellings_is_cut(key: str, around: str, seed: int) -> None:
    rng = random.Random(seed)
    spelled = "".join(_spell(c, rng.randrange(4)) for c in key)
    redactor = Redactor([key])
    redacted = redactor.text(around + spelled + around)
    assert REDACTED in redacted
    # What is left around the markers holds the key in no spelling (the marker itself may
    # contain a short key's text: "r" is in "[redacted]").
    for piece in redacted.split(REDACTED):
        assert redactor.text(piece) == piece
