"""Validation and normalisation of upstream task IDs: the forms adapters share (pure)."""

from __future__ import annotations

import unicodedata

MAX_EXTERNAL_ID_LENGTH = 256
INT64_MAX = 2**63 - 1
_SEPARATORS = frozenset("/\\")
# Unicode categories an opaque id may not contain: invisible or reordering characters
# (U+202E flips how the id reads in logs and dashboards), line and paragraph separators
# (U+2028, U+0085 split log lines), any whitespace, and code points that are not characters.
_REFUSED_CATEGORIES = {
    "Cc": "control",
    "Cf": "format",
    "Co": "private-use",
    "Cn": "unassigned",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Zs": "space",
}


class InvalidExternalId(ValueError):
    pass


def int64_id(raw: object) -> str:
    """A positive 64-bit integer id (MiniMax's), sent as a JSON number or decimal text."""
    if isinstance(raw, bool):
        raise InvalidExternalId("must be a positive 64-bit integer, not a boolean")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        if not raw:
            raise InvalidExternalId("must not be empty")
        if len(raw) > MAX_EXTERNAL_ID_LENGTH:
            raise InvalidExternalId(f"must be at most {MAX_EXTERNAL_ID_LENGTH} characters")
        if not raw.isascii() or not raw.isdigit():
            raise InvalidExternalId("must be a positive 64-bit integer (decimal digits only)")
        value = int(raw)
    else:
        raise InvalidExternalId("must be a positive 64-bit integer, as a number or a string")
    if value <= 0:
        raise InvalidExternalId("must be a positive 64-bit integer")
    if value > INT64_MAX:
        raise InvalidExternalId("is outside the 64-bit integer range")
    return str(value)


def id_text(raw: object, limit: int = MAX_EXTERNAL_ID_LENGTH, *, what: str = "") -> str:
    """`raw` as the text of an id: a non-empty string of at most `limit` characters. `what`
    names the id in the message for a value that is not a string."""
    if not isinstance(raw, str):
        raise InvalidExternalId(f"must be a string ({what})" if what else "must be a string")
    if not raw:
        raise InvalidExternalId("must not be empty")
    if len(raw) > limit:
        raise InvalidExternalId(f"must be at most {limit} characters")
    return raw


def opaque_id(raw: object) -> str:
    """Opaque text that goes into the query URL as one path segment (or query value)."""
    raw = id_text(raw)
    problem = path_segment_problem(raw)
    if problem is not None:
        raise InvalidExternalId(problem)
    return raw


def path_segment_problem(text: str) -> str | None:
    """Why `text` cannot stand as one path segment (a URL path segment, a file name) that
    stays one and reads the same to every eye and parser; None when it can."""
    if not text.strip("."):
        # "." and ".." are dot segments: URL normalisation turns .../audios/.. into the
        # parent path, whose keyed answer would be taken for the task's.
        return "must not consist of dots only ('.', '..' are URL dot segments)"
    for position, ch in enumerate(text):
        if ch in _SEPARATORS:
            return (
                f"must not contain '/' or '\\' (found {ch!r} at position {position}): "
                "it is one path segment"
            )
        category = unicodedata.category(ch)
        if category == "Cs":
            # JSON's "\ud800" escape decodes to a lone surrogate, which Postgres text cannot hold.
            return (
                "must be valid Unicode text "
                f"(lone surrogate U+{ord(ch):04X} at position {position})"
            )
        if category in _REFUSED_CATEGORIES:
            return (
                f"must not contain {_REFUSED_CATEGORIES[category]} characters "
                f"(found U+{ord(ch):04X} at position {position})"
            )
    return None
