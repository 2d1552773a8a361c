"""Hostile request bodies against a real uvicorn server, as a client on the network sends them.

Each bad request goes over ONE keep-alive connection and is followed by a good one on the same
connection: the bad one gets a 422 in the error shape (it was a 500, and nesting 256 deep
also dropped the connection), and the connection stays usable. A client that sends half a
body gets a 408 and the connection is closed, instead of holding it forever; one that sends
nothing, or half its headers, is disconnected (app/core/http_protocol.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.http_protocol import bounded_headers_protocol
from app.main import create_app
from tests.helpers import ACME_KEY, free_port
from tests.webhooks.receiver import start_server, stop_server

# Every wait on the server is bounded by this: a hung connection fails the test, not CI.
BOUND_S = 10.0
WEBHOOK = "/v1/webhooks/00000000-0000-0000-0000-000000000000"


class Connection:
    """One raw HTTP/1.1 connection: what was sent is exactly what the server gets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, str], Any]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: pollhook.test\r\n"
            f"Authorization: Bearer {ACME_KEY}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        await self.send(head.encode() + body)
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], Any]:
        async with asyncio.timeout(BOUND_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, json.loads(body)

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(BOUND_S):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, engine: AsyncEngine, **options: Any
) -> AsyncIterator[int]:
    port = free_port()
    server, task = await start_server(create_app(settings, engine=engine), port, **options)
    try:
        yield port
    finally:
        await stop_server(server, task)


@pytest.fixture
async def connection(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Connection]:
    async with running_api(settings, engine) as port:
        conn = await Connection.open(port)
        yield conn
        await conn.close()


def task(extra: str) -> str:
    return '{"provider": "jimmy", "external_id": "ext-1", ' + extra + "}"


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


A_PATH_31_DEEP = "metadata" + ".a" * 31  # the body is level 1, metadata level 2

BAD_BODIES: list[tuple[str, str, str, str | bytes, str, list[str]]] = [
    # (id, method, path, body, error code, fields named)
    ("metadata-value-nul", "POST", "/v1/tasks", task(r'"metadata": {"k": "a\u0000"}'),
     "validation_error", ["metadata.k"]),
    ("metadata-value-surrogate", "POST", "/v1/tasks", task(r'"metadata": {"k": "\ud800"}'),
     "validation_error", ["metadata.k"]),
    ("metadata-key-nul", "POST", "/v1/tasks", task(r'"metadata": {"\u0000": 1}'),
     "validation_error", [r"metadata.\u0000"]),
    ("metadata-key-surrogate", "POST", "/v1/tasks", task(r'"metadata": {"x\udfff": 1}'),
     "validation_error", [r"metadata.x\udfff"]),
    ("metadata-utf8-surrogate-bytes", "POST", "/v1/tasks",
     task('"metadata": {"k": "@"}').encode().replace(b"@", b"\xed\xa0\x80"),
     "validation_error", ["metadata.k"]),
    ("nan", "POST", "/v1/tasks", task('"metadata": {"k": NaN}'),
     "validation_error", ["metadata.k"]),
    ("infinity", "POST", "/v1/tasks", task('"metadata": {"k": [Infinity]}'),
     "validation_error", ["metadata.k.0"]),
    ("minus-infinity", "POST", "/v1/tasks", task('"metadata": {"k": -Infinity}'),
     "validation_error", ["metadata.k"]),
    ("1e400", "POST", "/v1/tasks", task('"metadata": {"k": 1e400}'),
     "validation_error", ["metadata.k"]),
    ("-1e400", "POST", "/v1/tasks", task('"metadata": {"k": -1e400}'),
     "validation_error", ["metadata.k"]),
    ("nested-256", "POST", "/v1/tasks", task(f'"metadata": {nested(255)}'),
     "validation_error", [A_PATH_31_DEEP]),
    ("nested-10000", "POST", "/v1/tasks", task('"metadata": ' + "[" * 9_999 + "]" * 9_999),
     "validation_error", ["body"]),
    ("external-id-nul", "POST", "/v1/tasks",
     r'{"provider": "jimmy", "external_id": "a\u0000"}', "validation_error", ["external_id"]),
    ("external-id-surrogate", "POST", "/v1/tasks",
     r'{"provider": "jimmy", "external_id": "\ud800"}', "validation_error", ["external_id"]),
    ("external-id-nan", "POST", "/v1/tasks",
     '{"provider": "minimax", "external_id": NaN}', "validation_error", ["external_id"]),
    ("callback-url-nul", "POST", "/v1/tasks", task(r'"callback_url": "https://a.test/\u0000"'),
     "validation_error", ["callback_url"]),
    ("callback-url-surrogate", "POST", "/v1/tasks",
     task(r'"callback_url": "https://a.test/\ud800"'), "validation_error", ["callback_url"]),
    ("not-json", "POST", "/v1/tasks", '{"provider": ', "invalid_json", ["body"]),
    ("create-description-nul", "POST", "/v1/webhooks",
     r'{"url": "https://a.test/", "description": "\u0000"}', "validation_error", ["description"]),
    ("create-description-surrogate", "POST", "/v1/webhooks",
     r'{"url": "https://a.test/", "description": "\ud800"}', "validation_error", ["description"]),
    ("create-url-nul", "POST", "/v1/webhooks", r'{"url": "https://a.test/\u0000"}',
     "validation_error", ["url"]),
    ("create-url-surrogate", "POST", "/v1/webhooks", r'{"url": "https://\udc00.test/"}',
     "validation_error", ["url"]),
    ("create-events-nul", "POST", "/v1/webhooks",
     r'{"url": "https://a.test/", "events": ["task.failed\u0000"]}',
     "validation_error", ["events.0"]),
    ("create-events-nan", "POST", "/v1/webhooks", '{"url": "https://a.test/", "events": [NaN]}',
     "validation_error", ["events.0"]),
    ("update-description-nul", "PATCH", WEBHOOK, r'{"description": "\u0000"}',
     "validation_error", ["description"]),
    ("update-description-surrogate", "PATCH", WEBHOOK, r'{"description": "\ud800"}',
     "validation_error", ["description"]),
    ("update-url-nul", "PATCH", WEBHOOK, r'{"url": "https://a.test/\u0000"}',
     "validation_error", ["url"]),
    ("update-events-surrogate", "PATCH", WEBHOOK, r'{"events": ["\ud800"]}',
     "validation_error", ["events.0"]),
    ("update-enabled-infinity", "PATCH", WEBHOOK, '{"enabled": Infinity}',
     "validation_error", ["enabled"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "fields"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_body_is_422_and_the_connection_stays_usable(
    connection: Connection,
    method: str,
    path: str,
    body: str | bytes,
    code: str,
    fields: list[str],
) -> None:
    raw = body.encode() if isinstance(body, str) else body
    status, headers, answer = await connection.request(method, path, raw)
    assert status == 422, answer
    assert answer["error"]["code"] == code
    assert [d["field"] for d in answer["error"]["details"]] == fields
    assert headers.get("connection") != "close"
    # The same connection answers the next request.
    status, _, answer = await connection.request("GET", "/v1/tasks")
    assert status == 200, answer
    assert answer["items"] == []


async def test_json_media_types_are_all_parsed_strictly(connection: Connection) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        status, _, answer = await connection.request(
            "PATCH", WEBHOOK, rb'{"description": "\u0000"}', content_type
        )
        assert status == 422, answer
        assert answer["error"]["details"][0]["field"] == "description"
    # Not declared JSON: not parsed, and refused as before.
    status, _, answer = await connection.request(
        "PATCH", WEBHOOK, rb'{"description": "\u0000"}', "text/plain"
    )
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")


# --- half a body ----------------------------------------------------------------------------

HEAD = (
    b"POST /v1/tasks HTTP/1.1\r\nHost: pollhook.test\r\n"
    b"Authorization: Bearer " + ACME_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
)


@pytest.mark.parametrize(
    "partial",
    [
        HEAD + b"Content-Length: 100\r\n\r\n" + b'{"provider": "jimmy",',
        HEAD + b"Content-Length: 100\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b'15\r\n{"provider": "jimmy",\r\n',
    ],
    ids=["content-length-part", "content-length-none", "chunked-unfinished"],
)
async def test_half_a_body_gets_408_and_the_connection_is_closed(
    settings: Settings, engine: AsyncEngine, partial: bytes
) -> None:
    hurried = settings.model_copy(update={"request_read_timeout_s": 0.2})
    async with running_api(hurried, engine) as port:
        conn = await Connection.open(port)
        await conn.send(partial)
        status, headers, answer = await conn.response()
        assert status == 408
        assert answer["error"]["code"] == "request_timeout"
        assert headers["connection"] == "close"
        assert await conn.closed_by_server()
        await conn.close()
        # The server still serves everyone else.
        other = await Connection.open(port)
        status, _, _ = await other.request("GET", "/v1/tasks")
        assert status == 200
        await other.close()


# --- half the headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [b"", b"GET /v1/tasks HTTP/1.1\r\n", b"GET /v1/tasks HTTP/1.1\r\nHost: pollhook.test\r\n"],
    ids=["nothing", "request-line", "some-headers"],
)
async def test_half_the_headers_are_disconnected(
    settings: Settings, engine: AsyncEngine, partial: bytes
) -> None:
    async with running_api(settings, engine, http=bounded_headers_protocol(0.2)) as port:
        conn = await Connection.open(port)
        await conn.send(partial)
        assert await conn.closed_by_server()
        await conn.close()


async def test_the_next_requests_headers_are_bounded_too(
    settings: Settings, engine: AsyncEngine
) -> None:
    """After a response, the first byte of a next request cancels uvicorn's keep-alive timer;
    the headers that follow are still bounded."""
    async with running_api(settings, engine, http=bounded_headers_protocol(0.2)) as port:
        conn = await Connection.open(port)
        status, _, _ = await conn.request("GET", "/v1/tasks")
        assert status == 200
        await conn.send(b"GET /v1/tasks HTTP/1.1\r\n")
        assert await conn.closed_by_server()
        await conn.close()


async def test_keep_alive_and_pipelining_still_work_under_the_bound(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with running_api(settings, engine, http=bounded_headers_protocol(5)) as port:
        conn = await Connection.open(port)
        for _ in range(3):
            status, _, _ = await conn.request("GET", "/v1/tasks")
            assert status == 200
        # Two requests in one write: the second waits, parsed, while the first is answered.
        head = f"GET /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\n\r\n"
        await conn.send(head.encode() * 2)
        assert [(await conn.response())[0] for _ in range(2)] == [200, 200]
        await conn.close()
