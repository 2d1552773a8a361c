"""Validation and normalisation of upstream task IDs, per provider kind (pure)."""

from __future__ import annotations

from app.core.config import ProviderKind

MAX_EXTERNAL_ID_LENGTH = 256
INT64_MAX = 2**63 - 1


class InvalidExternalId(ValueError):
    pass


def normalize_external_id(kind: ProviderKind, raw: object) -> str:
    """Return the canonical text form of `raw`, or raise InvalidExternalId with the reason."""
    if kind is ProviderKind.MINIMAX_T2A:
        return _minimax(raw)
    if kind is ProviderKind.JIMMY_SOUNDCLONE:
        return _opaque(raw)
    raise InvalidExternalId(f"unsupported provider kind {kind}")  # pragma: no cover


def _minimax(raw: object) -> str:
    # MiniMax task ids are int64 in its schema; clients send them as numbers or strings.
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


def _opaque(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidExternalId("must be a string")
    if not raw:
        raise InvalidExternalId("must not be empty")
    if len(raw) > MAX_EXTERNAL_ID_LENGTH:
        raise InvalidExternalId(f"must be at most {MAX_EXTERNAL_ID_LENGTH} characters")
    if raw != raw.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise InvalidExternalId("must not contain control characters or surrounding whitespace")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in raw):
        # JSON's "\ud800" escape decodes to a lone surrogate, which Postgres text cannot hold.
        raise InvalidExternalId("must be valid Unicode text (no lone surrogates)")
    return raw
