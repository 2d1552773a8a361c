"""A Postgres that is restarting answers every new connection with SQLSTATE 57P03 ("the
database system is starting up") for a moment. The API must answer that with 503 and
Retry-After like any other outage, not 500 (found by bench/soak.py restarting Postgres
under load: asyncpg raises it as a plain PostgresError, which SQLAlchemy wraps as a bare
DBAPIError rather than an OperationalError)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from app.core.config import Settings
from app.core.db import create_engine
from app.main import create_app
from tests.helpers import ACME_KEY
from tests.test_tasks_api import assert_error


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def _starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speak just enough of the wire protocol: refuse SSL, then refuse the startup packet
    the way a recovering server does."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            payload = await reader.readexactly(length - 4)
            if payload[:4] == struct.pack("!i", 80877103):  # SSLRequest
                writer.write(b"N")
                await writer.drain()
                continue
            writer.write(_error_response("57P03", "the database system is starting up"))
            await writer.drain()
            break
    writer.close()


@pytest_asyncio.fixture
async def recovering_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(_starting_up, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_database_starting_up_is_503(settings: Settings, recovering_server: int) -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{recovering_server}/x")
    app = create_app(settings, engine=engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://t",
            headers={"Authorization": f"Bearer {ACME_KEY}"},
        ) as http:
            write = await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 1})
            read = await http.get("/v1/tasks")
            ready = await http.get("/readyz")
    finally:
        await engine.dispose()
    for response in (write, read, ready):
        assert_error(response, 503, "service_unavailable")
    assert write.headers["retry-after"] == "5"
