"""The provider requests' transport (`provider_transport`: httpcore's pool on asyncio
streams, app/core/http_stream.py) against tiny servers on 127.0.0.1: plain and TLS
requests, connection reuse, and httpx's usual exceptions for what goes wrong. Each test runs
on both asyncio's own loop and uvloop, which production runs on (app/cli.py) and whose
transports are its own."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from app.core.http_client import SHARD_CONNECTIONS, ShardedTransport, provider_transport
from app.core.http_stream import on_next_write
from tests.helpers import free_port, self_signed_cert

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
LIMITS = httpx.Limits(
    max_connections=SHARD_CONNECTIONS, max_keepalive_connections=SHARD_CONNECTIONS
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
Run = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@pytest.fixture(params=list(LOOPS.values()), ids=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on a new loop of each kind (pytest-asyncio's loop factories
    would need a conftest hook that applies to every test of the folder)."""
    factory: Callable[[], asyncio.AbstractEventLoop] = request.param

    def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(test())

    return run


@pytest.fixture(scope="module")
def loopback_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    pair = self_signed_cert(tmp_path_factory.mktemp("tls"), "127.0.0.1", "IP:127.0.0.1")
    if pair is None:
        pytest.skip("openssl is not installed")
    return pair


def server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def client(tls: ssl.SSLContext | None = None, timeout: float = 5.0) -> httpx.AsyncClient:
    """A client as the poll worker builds it, on the provider transport."""
    context = tls or httpx.create_ssl_context()
    return httpx.AsyncClient(
        transport=ShardedTransport(
            SHARD_CONNECTIONS, lambda limits: provider_transport(limits, context)
        ),
        timeout=timeout,
    )


class Server:
    """Answers each request head with `answer` (nothing when None); counts connections,
    with `close_after` closes each connection after its first answer, and with `unasked`
    sends that on the first connection once its first answer has been read (the test sets
    `send_unasked`), and keeps the connection open."""

    def __init__(
        self,
        answer: bytes | None = OK,
        *,
        close_after: bool = False,
        unasked: bytes | None = None,
    ) -> None:
        self.answer = answer
        self.close_after = close_after
        self.unasked = unasked
        self.accepted = 0
        self.closed = asyncio.Event()
        self.send_unasked = asyncio.Event()
        self.unasked_sent = asyncio.Event()
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        first_connection = self.accepted == 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if self.answer is None:
                    await reader.read()  # until the client gives up
                    return
                writer.write(self.answer)
                await writer.drain()
                if self.close_after:
                    return
                if self.unasked is not None and first_connection:
                    first_connection = False
                    await self.send_unasked.wait()
                    writer.write(self.unasked)
                    await writer.drain()
                    self.unasked_sent.set()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.closed.set()

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


def test_plain_requests_share_a_kept_alive_connection(run: Run) -> None:
    async def check() -> None:
        async with Server().running() as server, client() as http:
            first = await http.get(f"http://127.0.0.1:{server.port}/a")
            second = await http.get(f"http://127.0.0.1:{server.port}/b")
        assert (first.status_code, first.text, second.text) == (200, "ok", "ok")
        assert server.accepted == 1

    run(check)


def test_tls_requests_are_verified(loopback_cert: tuple[Path, Path], run: Run) -> None:
    async def check() -> None:
        trusting = ssl.create_default_context(cafile=str(loopback_cert[0]))
        async with Server().running(server_tls(loopback_cert)) as server:
            async with client(trusting) as http:
                response = await http.get(f"https://127.0.0.1:{server.port}/")
                again = await http.get(f"https://127.0.0.1:{server.port}/")
            assert (response.status_code, again.text) == (200, "ok")
            assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
            assert server.accepted == 1
            # The system's CAs do not know the certificate.
            async with client() as http:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await http.get(f"https://127.0.0.1:{server.port}/")

    run(check)


def test_a_connection_the_server_closed_while_idle_is_not_reused(run: Run) -> None:
    """httpcore asks the stream whether an idle connection is readable: one the server
    closed is dropped, and the next request opens a new one instead of failing on it."""

    async def check() -> None:
        async with Server(close_after=True).running() as server, client() as http:
            assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
            await server.closed.wait()
            assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
        assert server.accepted == 2

    run(check)


def test_nothing_listening_is_a_connect_error(run: Run) -> None:
    async def check() -> None:
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{free_port()}/")

    run(check)


def test_a_tls_handshake_that_never_comes_is_a_connect_timeout(run: Run) -> None:
    async def check() -> None:
        async with Server(answer=None).running() as server, client(timeout=0.3) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"https://127.0.0.1:{server.port}/")

    run(check)


def test_an_answer_that_never_comes_is_a_read_timeout(run: Run) -> None:
    async def check() -> None:
        async with Server(answer=None).running() as server, client(timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{server.port}/")

    run(check)


def test_a_connection_cut_mid_answer_is_an_httpx_error(run: Run) -> None:
    async def check() -> None:
        cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"
        async with Server(cut, close_after=True).running() as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"http://127.0.0.1:{server.port}/")

    run(check)


def test_the_write_observer_is_called_once_at_the_next_write(run: Run) -> None:
    """`on_next_write`, as the send check's trace hook sets it: called at the write of that
    request's headers, and not again for the next request of the task."""

    async def check() -> None:
        calls: list[str] = []
        async with Server().running() as server, client() as http:

            async def trace(event: str, info: dict[str, object]) -> None:
                if event.endswith("send_request_headers.started"):
                    on_next_write(lambda: calls.append("written"))
                elif event.endswith("send_request_headers.complete"):
                    calls.append("complete")

            await http.get(f"http://127.0.0.1:{server.port}/", extensions={"trace": trace})
            await http.get(f"http://127.0.0.1:{server.port}/")
        assert calls == ["written", "complete"]

    run(check)


def test_a_connection_the_server_spoke_on_while_idle_is_not_reused(run: Run) -> None:
    """A server may answer a kept-alive connection with an unasked 408 before its idle
    timeout, and keep it open: the next request goes to a new connection, not to a
    connection whose next answer is that 408."""

    async def check() -> None:
        timeout = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
        async with Server(unasked=timeout).running() as server, client() as http:
            assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
            # Only now: sent with the first answer, it could be read with it.
            server.send_unasked.set()
            await server.unasked_sent.wait()
            again = await http.get(f"http://127.0.0.1:{server.port}/")
        assert (again.status_code, again.text) == (200, "ok")
        assert server.accepted == 2

    run(check)
