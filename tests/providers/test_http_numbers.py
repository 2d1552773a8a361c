"""Numbers an upstream may send that Python parses but nothing downstream can hold."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.providers.base import TransientError
from app.providers.http import finite_number, json_object


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (10**400, None),  # an int too large for a float
        (float("inf"), None),
        (float("nan"), None),
        (True, None),
        ("3", None),
        (None, None),
    ],
)
def test_finite_number(value: Any, expected: float | None) -> None:
    assert finite_number(value) == expected


@pytest.mark.parametrize("body", [b'{"duration": 1e400}', b'{"x": [-1e999]}'])
def test_a_number_past_a_double_is_a_malformed_answer(body: bytes) -> None:
    # Parsed, it would be inf, which jsonb refuses: the outcome write would fail every time.
    with pytest.raises(TransientError) as caught:
        json_object(httpx.Response(200, content=body))
    assert caught.value.code == "malformed_response"
