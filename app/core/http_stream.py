"""An httpcore network backend on asyncio's own streams, whose `write` hands the bytes to
the transport before it awaits anything.

Used for the rate-budgeted provider requests (`ShardedTransport`): their send check runs in
httpcore's trace hook just before the request headers are written, and whatever happens
between that check and the bytes leaving counts against the budget's `ARRIVAL_JITTER_S`
(docs/architecture.md, "Why the rate budget cannot be exceeded"). httpcore's default anyio
stream writes without yielding too, but then yields to the event loop once before `write`
returns (anyio 4.16, `SocketStream.send`), so the "headers written" trace event that stamps
`pollhook_upstream_send_delay_seconds` came only after every other ready task had run.
Here the write is `transport.write` followed by `drain()`, which only waits when the
transport's buffer is full: check, bytes to the kernel and the stamp follow each other with
no other task in between. The stamp itself is taken right before `transport.write`
(`on_next_write`): on loopback the write wakes the receiver, which can take the CPU from
this process before the system call returns, with the bytes already delivered; a stamp
after the write counted that wait as the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore

_on_write: ContextVar[Callable[[], None] | None] = ContextVar("on_write", default=None)


def on_next_write(callback: Callable[[], None]) -> None:
    """Have `callback` called right before the next write of the current task hands its
    bytes to the transport, with nothing awaited in between (once; a stream of another
    backend never calls it)."""
    _on_write.set(callback)


@contextlib.contextmanager
def _mapped(timeout: type[Exception], error: type[Exception]) -> Iterator[None]:
    """asyncio's timeout and socket errors as the httpcore exceptions httpx maps."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
        raise error(str(exc) or type(exc).__name__) from exc


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        # Taken before anything can raise: a callback left set would fire at a later
        # request's write.
        callback = _on_write.get()
        if callback is not None:
            _on_write.set(None)
        if self._writer.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            # No await before this: the bytes go to the socket (or the transport's buffer,
            # when the socket's is full) in the same step as the caller's last check.
            if callback is not None:
                callback()
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        # As httpcore's anyio stream does: no TLS close_notify, no waiting for the peer.
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._writer.transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # httpcore drops an idle connection that is readable: the server closed it (or
            # sent something unasked, such as a 408 before its idle timeout). The transport
            # reads eagerly, so an end of stream, an error or unasked bytes may already be
            # in the reader rather than on the socket. StreamReader has no public way to
            # see buffered bytes without consuming them, hence its private `_buffer`.
            reader = self._reader
            return (
                bool(reader._buffer)  # type: ignore[attr-defined]
                or reader.at_eof()
                or reader.exception() is not None
                or transport.is_closing()
                or _socket_readable(transport.get_extra_info("socket"))
            )
        return None


def _socket_readable(sock: socket.socket | None) -> bool:
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connections as asyncio streams (`AsyncioStream`), for httpcore's pool."""

    # The signatures are httpcore's, hence `timeout` parameters (ASYNC109).
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout_at(deadline):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            # The addresses in the resolver's order; each gets an equal share of what is
            # left of the timeout, so one that does not answer (an IPv6 route that goes
            # nowhere) leaves time for the others. uvloop's create_connection has no
            # happy eyeballs to do this for us.
            for index, (family, _, _, _, address) in enumerate(infos):
                attempt = None
                if deadline is not None:
                    attempt = loop.time() + (deadline - loop.time()) / (len(infos) - index)
                # The sockaddr's host loses an IPv6 scope id (link-local addresses);
                # put it back in the form getaddrinfo reads.
                target = str(address[0])
                if len(address) == 4 and address[3]:
                    target = f"{target}%{address[3]}"
                try:
                    async with asyncio.timeout_at(attempt):
                        reader, writer = await asyncio.open_connection(
                            target,
                            int(address[1]),
                            family=family,
                            local_addr=None if local_address is None else (local_address, 0),
                        )
                except (TimeoutError, OSError):
                    if index == len(infos) - 1:
                        raise
                    continue
                return _with_options(reader, writer, socket_options)
        raise httpcore.ConnectError(f"no address to connect to for {host!r}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
            return _with_options(reader, writer, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _with_options(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> AsyncioStream:
    sock = writer.transport.get_extra_info("socket")
    try:
        for option in socket_options or ():
            sock.setsockopt(*option)
    except BaseException:
        writer.transport.abort()
        raise
    return AsyncioStream(reader, writer)
