"""What every outbound HTTP exchange shares, to providers and to webhook consumers alike:
a connection pool that stays cheap with many requests in flight, an httpx transport on an
httpcore pool of our choosing, reading an answer without letting its sender make us buffer
more than we choose, and reading its Retry-After."""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from app.core.http_stream import AsyncioBackend

MAX_RETRY_AFTER_S = 3600.0
# Connections per pool shard (ShardedTransport).
SHARD_CONNECTIONS = 8


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several connection pools of at most SHARD_CONNECTIONS connections each, together as
    many connections as asked for; a request goes to the first pool with a free connection.

    httpcore's pool walks all its connections, and for each of them all of them again, every
    time a request starts or ends (`_assign_requests_to_connections`; each idle one's check
    is a system call): with 64 requests in flight to one host that walk took ~40 % of the
    engine's CPU (docs/benchmarks.md). Small pools keep it short. Filling the first pools
    first, rather than taking them in turn, keeps a light load on the few warm connections
    of the first pool: a request on a new connection reaches the server later than one on a
    warm connection, and that spread would eat the budget's margin for lateness."""

    def __init__(
        self,
        max_connections: int,
        make: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        if make is None:
            # One TLS context for every shard: building one loads the CA bundle (~30 ms),
            # which per shard made a worker's start seconds slower.
            tls = httpx.create_ssl_context()

            def make(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
                return provider_transport(limits, tls)

        shards = max(1, math.ceil(max_connections / SHARD_CONNECTIONS))
        self.per_shard = math.ceil(max_connections / shards)
        limits = httpx.Limits(
            max_connections=self.per_shard, max_keepalive_connections=self.per_shard
        )
        self.shards = [make(limits) for _ in range(shards)]
        # Requests each shard holds: from the request until its response is closed.
        self.busy = [0] * shards

    def _pick(self) -> int:
        for index, busy in enumerate(self.busy):
            if busy < self.per_shard:
                return index
        return self.busy.index(min(self.busy))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self.busy[index] += 1
        try:
            response = await self.shards[index].handle_async_request(request)
        except BaseException:
            self.busy[index] -= 1
            raise
        response.stream = _Held(response.stream, self.busy, index)
        return response

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def provider_transport(limits: httpx.Limits, tls: ssl.SSLContext) -> PoolTransport:
    """What httpx.AsyncHTTPTransport(limits=limits, verify=tls) is, on asyncio streams
    whose write leaves no opening between a request's send check and its bytes
    (app/core/http_stream.py)."""
    return PoolTransport(
        httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )
    )


class PoolTransport(httpx.AsyncBaseTransport):
    """An httpx transport on an httpcore connection pool built by the caller.

    httpx 0.28's AsyncHTTPTransport cannot be given a network backend, so this does what
    it does around its pool: translate the request, map httpcore exceptions to httpx ones,
    wrap the response stream. No proxies (httpx.AsyncClient mounts its own for those)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("PoolTransport needs an async request body")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


# httpcore -> httpx exception types, most specific first; the same mapping httpx's own
# transport applies (a test compares the two, so a change in httpx fails loudly).
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def httpx_error_for(exc: Exception) -> type[httpx.TransportError] | None:
    for source, target in _HTTPCORE_TO_HTTPX:
        if isinstance(exc, source):
            return target
    return None


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        target = httpx_error_for(exc)
        if target is None:
            raise  # netguard's BlockedAddress and anything else foreign pass through unchanged
        raise target(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._response.aiter_stream():
                yield part

    async def aclose(self) -> None:
        await self._response.aclose()


class _Held(httpx.AsyncByteStream):
    """A response body that frees its shard's place when it is closed."""

    def __init__(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, busy: list[int], index: int
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._busy = busy
        self._index: int | None = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._index is not None:
                self._busy[self._index] -= 1
                self._index = None


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
