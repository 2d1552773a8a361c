"""What every outbound HTTP exchange shares, to providers and to webhook consumers alike:
a connection pool that stays cheap with many requests in flight, reading an answer without
letting its sender make us buffer more than we choose, and reading its Retry-After."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

MAX_RETRY_AFTER_S = 3600.0
# Connections per pool shard (ShardedTransport).
SHARD_CONNECTIONS = 8


class ShardedTransport(httpx.AsyncBaseTransport):
    """Requests spread round-robin over several connection pools of at most
    SHARD_CONNECTIONS connections each, together as many connections as asked for.

    httpcore's pool walks all its connections, and for each of them all of them again, every
    time a request starts or ends (`_assign_requests_to_connections`; each idle one's check
    is a system call): with 64 requests in flight to one host that walk took ~40 % of the
    engine's CPU (docs/benchmarks.md). Small pools keep it short; round-robin keeps every
    shard's connections warm."""

    def __init__(
        self,
        max_connections: int,
        make: Callable[[httpx.Limits], httpx.AsyncBaseTransport] = (
            lambda limits: httpx.AsyncHTTPTransport(limits=limits)
        ),
    ) -> None:
        shards = max(1, math.ceil(max_connections / SHARD_CONNECTIONS))
        per_shard = math.ceil(max_connections / shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self.shards = [make(limits) for _ in range(shards)]
        self._next = itertools.cycle(self.shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._next).handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


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
