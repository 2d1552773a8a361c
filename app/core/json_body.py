"""The one parser of JSON request bodies: JSON as Postgres and every consumer can hold it.

Python's `json` accepts more than JSON and more than Postgres stores. Left alone, each of
these reached the database or the serializer and answered 500:

- `NaN`, `Infinity`, `-Infinity` (not JSON at all) and numbers that overflow a double
  (`1e400` becomes `inf`);
- NUL (U+0000) and unpaired surrogates (U+D800-U+DFFF, from `"\\ud800"` escapes or raw
  bytes), in values and in object keys: Postgres `text` and `jsonb` cannot hold them, and a
  surrogate cannot even be encoded as UTF-8;
- deep nesting: 256 levels pass `json.loads` but exceed the serializer's depth.

`parse_json_body` refuses each of them as a 422 naming the field. Pure; table-tested in
tests/core/test_json_body.py.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from app.core.errors import InvalidJson, ValidationFailed

# The body object is level 1, so a `metadata` object nests 31 levels below it. Far above any
# real document and far below what the parser, pydantic or the serializer recurse into.
MAX_JSON_DEPTH = 32
# A body full of bad strings names this many fields, not thousands.
MAX_REPORTED = 10

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
STRING_MESSAGE = "must not contain NUL (U+0000) or unpaired surrogates (U+D800-U+DFFF)"
NUMBER_MESSAGE = "must be a finite number (no NaN or Infinity, at most ±1.8e308)"
DEPTH_MESSAGE = f"nested deeper than {MAX_JSON_DEPTH} levels"


def parse_json_body(raw: bytes) -> Any:
    """`raw` as JSON (UTF-8, -16 or -32, as `json.loads` detects it), or raise InvalidJson
    (not JSON) or ValidationFailed (JSON that pollhook cannot store; `details` names each
    field, e.g. `metadata.a.b`)."""
    try:
        document = json.loads(raw)
    except RecursionError:
        # Deeper than the C parser recurses (about 1,000 levels): refused without a path.
        raise ValidationFailed.field("body", DEPTH_MESSAGE) from None
    except ValueError as exc:  # JSONDecodeError, undecodable bytes, integers over 4300 digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidJson(
            "the request body is not valid JSON", details=[{"field": "body", "message": reason}]
        ) from None
    problems = _problems(document)
    if problems:
        summary = "; ".join(f"{field}: {message}" for field, message in problems[:5])
        raise ValidationFailed(
            summary, details=[{"field": field, "message": message} for field, message in problems]
        )
    return document


def _problems(document: Any) -> list[tuple[str, str]]:
    """(field, message) for each value pollhook refuses. Iterative, so the depth of the
    document never meets Python's recursion limit. Scalars are checked in place and only
    containers are stacked, by exact type (json.loads makes no subclasses): a 64 KiB array
    costs a few times what json.loads does."""
    problems: list[tuple[str, str]] = []
    if type(document) is not dict and type(document) is not list:
        _check_scalar(document, (), problems)
        return problems
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack and len(problems) < MAX_REPORTED:
        container, path = stack.pop()
        if len(path) >= MAX_JSON_DEPTH:
            problems.append((_field(path), DEPTH_MESSAGE))
            continue
        nested: list[tuple[Any, tuple[str | int, ...]]] = []
        pairs = container.items() if type(container) is dict else enumerate(container)
        for key, item in pairs:
            if type(key) is str and _FORBIDDEN.search(key):
                problems.append((_field((*path, key)), f"key {STRING_MESSAGE}"))
            kind = type(item)
            if kind is dict or kind is list:
                nested.append((item, (*path, key)))
            elif kind is str or kind is float:
                _check_scalar(item, (*path, key), problems)
        stack.extend(reversed(nested))
    return problems[:MAX_REPORTED]


def _check_scalar(
    value: object, path: tuple[str | int, ...], problems: list[tuple[str, str]]
) -> None:
    if isinstance(value, str) and _FORBIDDEN.search(value):
        problems.append((_field(path), STRING_MESSAGE))
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append((_field(path), NUMBER_MESSAGE))


def _field(path: tuple[str | int, ...]) -> str:
    """`metadata.a.0`, as the validation errors name fields; "body" for the document itself.

    A forbidden character in a key is shown as its escape: echoed raw it would make the error
    response itself unencodable.
    """
    if not path:
        return "body"
    return ".".join(
        _FORBIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", p) if isinstance(p, str) else str(p)
        for p in path
    )
