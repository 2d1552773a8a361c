"""What every outbound HTTP exchange shares, to providers and to webhook consumers alike:
reading an answer without letting its sender make us buffer more than we choose, and
reading its Retry-After."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 3600.0


async def read_at_most(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a body, and whether there was more (reading stops at the first
    chunk past the limit, so a sender cannot make us read on)."""
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        if size + len(chunk) > limit:
            kept.append(chunk[: limit - size])
            return b"".join(kept), True
        size += len(chunk)
        kept.append(chunk)
    return b"".join(kept), False


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), in [0, 3600]."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
