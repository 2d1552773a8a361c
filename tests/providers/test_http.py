"""HttpUpstream and the response helpers every adapter shares."""

from __future__ import annotations

import asyncio
import gzip
import json
import select
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from app import __version__
from app.core.http_client import retry_after_seconds
from app.providers.base import (
    RAW_RESPONSE_LIMIT,
    CredentialError,
    ProviderError,
    RateLimited,
    RequestRefused,
    TaskError,
    TransientError,
)
from app.providers.http import (
    MAX_RESPONSE_BYTES,
    clip,
    is_http_url,
    json_object,
    raise_for_http_status,
    unexpected_status,
    url_expires_at,
)
from app.providers.registry import adapter_for
from tests.providers import API_KEY, HTML_ERROR_PAGE, make_harness, raising, reply

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def response(
    status: int = 200, content: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=content,
        headers=headers,
        request=httpx.Request("GET", "https://upstream.test/x"),
    )


class ChunkStream(httpx.AsyncByteStream):
    """A body sent in chunks, optionally forever, optionally slowly; counts what was pulled."""

    def __init__(self, chunk: bytes, count: int | None = None, delay_s: float = 0.0) -> None:
        self.chunk = chunk
        self.count = count
        self.delay_s = delay_s
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.count is None or self.pulled < self.count:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.pulled += 1
            yield self.chunk


# --- HttpUpstream ---------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://jimmy.test", "https://jimmy.test/prefix"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/open-api/v1/audios/..",  # httpx sends this to /api/open-api/v1
        "/api/open-api/v1/audios/.",  # ... and this to /api/open-api/v1/audios
        "/api/open-api/v1/audios/../../../etc",
        "/api/./open-api/v1/audios/x",
        "/api/open-api/v1/audios/x/..",
        "/api/open-api/v1/audios/é",  # not percent-encoded: would go out as %C3%A9
    ],
)
async def test_a_path_that_would_not_arrive_as_asked_is_refused_unsent(
    base_url: str, path: str
) -> None:
    harness = make_harness(
        reply({"code": 20000, "data": {"status": "completed"}}), base_url=base_url
    )

    with pytest.raises(RequestRefused) as refused:
        await harness.upstream.get(path)

    assert isinstance(refused.value, TaskError)  # the task fails; the instance is fine
    assert refused.value.code == "request_path_refused"
    assert harness.requests == []
    assert harness.slots == 0  # refused before a budget slot is spent on it


@pytest.mark.parametrize("base_url", ["https://jimmy.test", "https://jimmy.test/prefix"])
async def test_a_path_that_arrives_as_asked_is_sent(base_url: str) -> None:
    harness = make_harness(reply({"ok": True}), base_url=base_url)

    await harness.upstream.get("/api/open-api/v1/audios/a..b%2F..%2Fc", {"q": "../x"})

    [request] = harness.requests
    assert request.url.raw_path == (
        base_url.removeprefix("https://jimmy.test").encode()
        + b"/api/open-api/v1/audios/a..b%2F..%2Fc?q=..%2Fx"
    )


async def test_get_sends_one_budgeted_request_with_auth_and_identity() -> None:
    harness = make_harness(reply({"ok": True}), base_url="https://api.minimax.test")

    answer = await harness.upstream.get("/v1/query/x", {"task_id": "42", "z": "a b"})

    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert harness.log == ["slot", "send"]
    [request] = harness.requests
    assert request.method == "GET"
    assert str(request.url) == "https://api.minimax.test/v1/query/x?task_id=42&z=a+b"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"pollhook/{__version__}"
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


@pytest.mark.parametrize("api_key", [None, ""])
async def test_no_authorization_header_without_a_key(api_key: str | None) -> None:
    harness = make_harness(reply({}), api_key=api_key)

    await harness.upstream.get("/x")

    assert "Authorization" not in harness.requests[0].headers
    assert harness.slots == 1


async def test_slot_is_taken_even_when_the_request_then_fails() -> None:
    harness = make_harness(raising(httpx.ConnectError("refused")))

    with pytest.raises(TransientError):
        await harness.upstream.get("/x")

    assert harness.log == ["slot", "send"]


async def test_redirects_are_returned_not_followed() -> None:
    harness = make_harness(
        reply(status=302, text="", headers={"Location": "https://elsewhere.test/steal"})
    )

    answer = await harness.upstream.get("/x")

    assert answer.status_code == 302
    assert answer.headers["location"] == "https://elsewhere.test/steal"
    assert len(harness.requests) == 1


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.PoolTimeout("pool exhausted"), "timeout"),
        (httpx.ConnectError("connection refused"), "connection_error"),
        (httpx.ReadError("connection reset"), "connection_error"),
        (httpx.RemoteProtocolError("server disconnected"), "connection_error"),
    ],
)
async def test_transport_failures_are_transient(exc: Exception, code: str) -> None:
    harness = make_harness(raising(exc))

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert type(caught.value) is TransientError
    assert caught.value.code == code


async def test_a_slow_drip_body_is_cut_at_the_request_timeout() -> None:
    stream = ChunkStream(b"{", delay_s=0.05)
    harness = make_harness(lambda _: httpx.Response(200, stream=stream), request_timeout_s=0.3)

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert caught.value.code == "timeout"
    assert 0 < stream.pulled < 20


async def test_declared_oversized_body_is_refused_unread() -> None:
    stream = ChunkStream(b"x" * 1024, count=4)
    harness = make_harness(
        lambda _: httpx.Response(
            200, stream=stream, headers={"Content-Length": str(MAX_RESPONSE_BYTES + 1)}
        )
    )

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert caught.value.code == "response_too_large"
    assert stream.pulled == 0


async def test_endless_body_is_cut_at_one_mebibyte() -> None:
    stream = ChunkStream(b"x" * 65_536)
    harness = make_harness(lambda _: httpx.Response(200, stream=stream))

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert caught.value.code == "response_too_large"
    assert stream.pulled == MAX_RESPONSE_BYTES // 65_536 + 1


async def test_a_body_of_exactly_the_limit_is_read() -> None:
    harness = make_harness(lambda _: httpx.Response(200, content=b"x" * MAX_RESPONSE_BYTES))

    answer = await harness.upstream.get("/x")

    assert len(answer.content) == MAX_RESPONSE_BYTES


async def test_a_gzip_bomb_is_cut_after_decoding() -> None:
    bomb = gzip.compress(b"0" * (MAX_RESPONSE_BYTES * 4))
    harness = make_harness(
        lambda _: httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})
    )

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert caught.value.code == "response_too_large"


async def test_gzip_body_is_handed_over_decoded() -> None:
    packed = gzip.compress(b'{"code": 20000}')
    harness = make_harness(
        lambda _: httpx.Response(
            200,
            content=packed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    )

    answer = await harness.upstream.get("/x")

    assert json_object(answer) == {"code": 20000}
    assert "content-encoding" not in answer.headers
    assert answer.headers["content-length"] == str(len(b'{"code": 20000}'))
    assert answer.headers["content-type"] == "application/json"


async def test_undecodable_gzip_is_malformed() -> None:
    harness = make_harness(
        lambda _: httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    )

    with pytest.raises(TransientError) as caught:
        await harness.upstream.get("/x")

    assert caught.value.code == "malformed_response"


# --- json_object ----------------------------------------------------------------------------


def test_json_object_returns_the_object() -> None:
    assert json_object(response(content=b'{"a": [1, "b", null]}')) == {"a": [1, "b", None]}


@pytest.mark.parametrize(
    ("content", "headers", "phrase"),
    [
        (HTML_ERROR_PAGE.encode(), {"Content-Type": "text/html"}, "an HTML page"),
        (b"  <html><body>oops</body></html>", {}, "an HTML page"),
        (b'{"base_resp": {"status_code": 0', {}, "not JSON"),
        (b"", {}, "not JSON"),
        (b"\xff\xfe\xfa not utf-8", {}, "not JSON"),
        (b'{"a": NaN}', {}, "not JSON"),
        (b'{"a": -Infinity}', {}, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "not JSON"),
        (b'[{"code": 20000}]', {}, "not an object"),
        (b'"just a string"', {}, "not an object"),
        (b"null", {}, "not an object"),
        (b"20000", {}, "not an object"),
    ],
)
def test_json_object_refuses_anything_but_an_object(
    content: bytes, headers: dict[str, str], phrase: str
) -> None:
    with pytest.raises(TransientError) as caught:
        json_object(response(502, content, headers))

    assert caught.value.code == "malformed_response"
    assert phrase in caught.value.message
    assert caught.value.raw is not None
    assert caught.value.raw["http_status"] == 502
    assert len(caught.value.raw["body"]) <= 512


def test_json_object_keeps_a_short_excerpt_of_a_long_page() -> None:
    with pytest.raises(TransientError) as caught:
        json_object(response(200, b"<html>" + b"a" * 100_000))

    assert caught.value.raw is not None
    assert caught.value.raw["body"] == ("<html>" + "a" * 506)


def test_json_object_makes_strings_storable_in_postgres() -> None:
    body = b'{"msg": "a\\u0000b", "k\\u0000": ["\\ud800x", {"n": "\\udfff"}], "ok": "\\u00e9"}'

    value = json_object(response(content=body))

    assert value == {"msg": "a\ufffdb", "k\ufffd": ["?x", {"n": "?"}], "ok": "é"}
    json.dumps(value).encode("utf-8")


# --- retry_after_seconds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("86400", 3600.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        (format_datetime(NOW + timedelta(days=2), usegmt=True), 3600.0),
        ("Sunday, 01-Mar-26 12:00:30 GMT", 30.0),
        ("Sun Mar  1 12:01:00 2026", 60.0),
        ("Sun, 99 Foo 2026 12:00:00 GMT", None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == expected


def test_retry_after_http_date_defaults_to_the_current_time() -> None:
    header = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)

    seconds = retry_after_seconds(header)

    assert seconds is not None
    assert 110 <= seconds <= 120


# --- raise_for_http_status ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, CredentialError),
        (403, CredentialError),
        (429, RateLimited),
        (408, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (599, TransientError),
    ],
)
def test_common_statuses_raise(status: int, error_type: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as caught:
        raise_for_http_status(response(status, b"nope"))

    assert type(caught.value) is error_type
    assert caught.value.code == f"http_{status}"
    assert caught.value.raw == {"http_status": status, "body": "nope"}


@pytest.mark.parametrize("status", [200, 201, 204, 301, 302, 304, 400, 404, 409, 410, 422])
def test_other_statuses_are_left_to_the_adapter(status: int) -> None:
    try:
        raise_for_http_status(response(status))
    except ProviderError as exc:
        pytest.fail(f"HTTP {status} raised {exc!r}")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({"Retry-After": "whenever"}, None), ({}, None)],
)
def test_429_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    with pytest.raises(RateLimited) as caught:
        raise_for_http_status(response(429, headers=headers))

    assert caught.value.retry_after_s == expected


def test_429_with_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)

    with pytest.raises(RateLimited) as caught:
        raise_for_http_status(response(429, headers={"Retry-After": when}))

    assert caught.value.retry_after_s is not None
    assert 50 <= caught.value.retry_after_s <= 60


# --- small helpers --------------------------------------------------------------------------


def test_unexpected_status_is_transient_with_the_status_as_code() -> None:
    error = unexpected_status(response(404, b"Not Found"))

    assert type(error) is TransientError
    assert error.code == "http_404"
    assert error.raw == {"http_status": 404, "body": "Not Found"}


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://cdn.example.com/a.mp3?sig=1", True),
        ("http://cdn.example.com/a.tar", True),
        ("javascript:alert(1)", False),
        ("ftp://cdn.example.com/a.mp3", False),
        ("/relative/a.mp3", False),
        ("https://", False),
        ("http://[::1", False),
        ("https://cdn.example.com/" + "a" * 9000, False),
    ],
)
def test_is_http_url(url: str, ok: bool) -> None:
    assert is_http_url(url) is ok


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip("x" * 300) == "x" * 200 + "…"


def test_raw_excerpt_never_exceeds_the_raw_limit() -> None:
    with pytest.raises(TransientError) as caught:
        json_object(response(200, "é".encode() * 200_000))

    assert caught.value.raw is not None
    assert len(json.dumps(caught.value.raw)) <= RAW_RESPONSE_LIMIT


class _Aborted(Exception):
    pass


async def test_before_send_aborts_after_connecting_with_nothing_sent() -> None:
    """The hook runs once the connection is up and before any byte of the request: raising
    there leaves the upstream with a connection but no request (real sockets; MockTransport
    has no connection phase)."""
    import asyncio

    from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
    from app.providers.http import HttpUpstream

    received: list[bytes] = []
    read_all = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))  # until the client hangs up
        read_all.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A,
        **{**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "base_url": f"http://127.0.0.1:{port}"},
    )
    calls: list[str] = []

    async def acquire() -> None:
        calls.append("slot")

    async def before_send() -> bool:
        calls.append("before_send")
        raise _Aborted

    async with httpx.AsyncClient() as client:
        upstream = HttpUpstream(
            client, settings, acquire, before_send, adapter_for(settings.kind).auth_headers
        )
        with pytest.raises(_Aborted):
            await upstream.get("/v1/query/t2a_async_query_v2", {"task_id": "1"})
    await asyncio.wait_for(read_all.wait(), 5)
    server.close()
    await server.wait_closed()
    assert calls == ["slot", "before_send"]
    assert received == [b""]  # connected, then closed without a byte of the request


async def test_a_missed_slot_at_the_last_moment_starts_the_request_over() -> None:
    """`before_send` saying no (the slot went by while connecting) sends nothing; the request
    waits for another slot and goes out once."""
    import asyncio

    from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
    from app.providers.http import HttpUpstream

    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requests.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A,
        **{**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "base_url": f"http://127.0.0.1:{port}"},
    )
    calls: list[str] = []
    answers = iter([False, True])

    async def acquire() -> None:
        calls.append("slot")

    async def before_send() -> bool:
        calls.append("before_send")
        return next(answers)

    async with httpx.AsyncClient() as client:
        upstream = HttpUpstream(
            client, settings, acquire, before_send, adapter_for(settings.kind).auth_headers
        )
        response = await upstream.get("/v1/query/t2a_async_query_v2", {"task_id": "1"})
    server.close()
    await server.wait_closed()
    assert response.status_code == 200
    assert calls == ["slot", "before_send", "slot", "before_send"]
    assert len(requests) == 1


@pytest.mark.parametrize(
    ("scheme", "yield_after_check"),
    [("http", False), ("https", False), ("http", True)],
)
async def test_no_other_task_runs_between_the_send_check_and_the_bytes_written(
    scheme: str, yield_after_check: bool, tmp_path: Path
) -> None:
    """What happens after the last send check counts against the budget's ARRIVAL_JITTER_S
    (docs/architecture.md): a callback made ready at the check must find the request's
    bytes already on the server's socket and its send delay already stamped. (httpcore's
    anyio stream wrote before yielding to the loop too, but stamped only after.) The server
    reads nothing until the callback ran, so bytes waiting on its socket are the request's.
    The last case yields once after the check, as a stream that awaits before its write
    would: the callback then runs first, and sees neither."""
    from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
    from app.core.http_client import ShardedTransport, provider_transport
    from app.core.metrics import REGISTRY
    from app.providers.http import HttpUpstream
    from tests.helpers import self_signed_cert

    server_tls = None
    client_tls = httpx.create_ssl_context()
    if scheme == "https":
        pair = self_signed_cert(tmp_path, "127.0.0.1", "IP:127.0.0.1")
        if pair is None:
            pytest.skip("openssl is not installed")
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(*pair)
        client_tls = ssl.create_default_context(cafile=str(pair[0]))

    # A blocking server in a thread, so that the callback can wait for it without the loop.
    listener = socket.create_server(("127.0.0.1", 0))
    ready, probed = threading.Event(), threading.Event()
    server_end: list[socket.socket] = []

    def serve() -> None:
        raw, _ = listener.accept()
        conn = raw if server_tls is None else server_tls.wrap_socket(raw, server_side=True)
        with conn:
            server_end.append(conn)
            ready.set()
            probed.wait(10)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def stamps() -> float:
        return REGISTRY.get_sample_value("pollhook_upstream_send_delay_seconds_count") or 0.0

    seen: dict[str, object] = {}

    def probe(stamps_at_check: float) -> None:
        # Waits are bounded only so that a failure does not hang: written before this ran,
        # the bytes are there at once.
        ready.wait(5)
        readable, _, _ = select.select(server_end, [], [], 2.0)
        seen.update(bytes_there=bool(readable), stamped=stamps() - stamps_at_check)
        probed.set()

    async def acquire() -> None:
        pass

    async def before_send() -> bool:
        asyncio.get_running_loop().call_soon(probe, stamps())
        if yield_after_check:
            await asyncio.sleep(0)
        return True

    settings = ProviderSettings(
        kind=ProviderKind.MINIMAX_T2A,
        **{
            **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A],
            "base_url": f"{scheme}://127.0.0.1:{listener.getsockname()[1]}",
        },
    )
    server = asyncio.create_task(asyncio.to_thread(serve))
    transport = ShardedTransport(8, lambda limits: provider_transport(limits, client_tls))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            upstream = HttpUpstream(
                client, settings, acquire, before_send, adapter_for(settings.kind).auth_headers
            )
            response = await upstream.get("/v1/query/t2a_async_query_v2", {"task_id": "1"})
        await server
    finally:
        probed.set()
        listener.close()
    assert response.status_code == 200
    if yield_after_check:
        assert seen == {"bytes_there": False, "stamped": 0.0}
    else:
        assert seen == {"bytes_there": True, "stamped": 1.0}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # The provider's lifetime when the URL says nothing.
        ("https://cdn.test/a.mp3", datetime(2026, 12, 4, 9, tzinfo=UTC)),
        # An OSS Expires= earlier than that.
        ("https://cdn.test/a.mp3?Expires=1796346000", datetime(2026, 12, 4, 1, tzinfo=UTC)),
        # SigV4: X-Amz-Date + X-Amz-Expires.
        (
            "https://cdn.test/a.mp3?X-Amz-Date=20261204T000000Z&X-Amz-Expires=3600",
            datetime(2026, 12, 4, 1, tzinfo=UTC),
        ),
        # Past what a datetime holds, or not a date: the lifetime stands, nothing raises.
        ("https://cdn.test/a.mp3?expires=999999999999", datetime(2026, 12, 4, 9, tzinfo=UTC)),
        (
            "https://cdn.test/a.mp3?X-Amz-Date=99991231T235959Z&X-Amz-Expires=999999999",
            datetime(2026, 12, 4, 9, tzinfo=UTC),
        ),
        (
            "https://cdn.test/a.mp3?X-Amz-Date=nope&X-Amz-Expires=60",
            datetime(2026, 12, 4, 9, tzinfo=UTC),
        ),
    ],
)
def test_url_expires_at(url: str, expected: datetime) -> None:
    received = datetime(2026, 12, 4, 0, tzinfo=UTC)
    assert url_expires_at(url, received, timedelta(hours=9)) == expected
