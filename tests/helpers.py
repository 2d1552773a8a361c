"""Shared test helpers (not fixtures)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.service import ArchiveIntake
from app.blobs.views import ArchiveLinks
from app.core.config import ProviderKind, Settings
from app.main import create_app
from app.providers.registry import adapter_for

ACME_KEY = "acme-test-key-0123456789abcdef"
# The allow-list entry of the default test settings, and a URL it lets through: loopback on
# the discard port, where nothing listens.
DISCARD = "127.0.0.1:9"
DISCARD_URL = "http://127.0.0.1:9"
OTHER_KEY = "other-test-key-0123456789abcdef"
# Operators of the default test settings: one that changes, one that only reads.
OPS_KEY = "ops-test-key-0123456789abcdef"
READER_KEY = "reader-test-key-0123456789abcdef"
OPS = {"Authorization": f"Bearer {OPS_KEY}"}
ADMIN_KEYS = [
    {"name": "ops", "key": OPS_KEY},
    {"name": "reader", "key": READER_KEY, "read_only": True},
]

# The archive off: a poll's success starts no copy, and a task shows no links.
ARCHIVE_OFF = ArchiveIntake(adapter_for(ProviderKind.MINIMAX_T2A), enabled=False, wait_s=0)
NO_LINKS = ArchiveLinks(None, link_ttl_s=3600)


@dataclass(frozen=True)
class PgServer:
    url: URL
    embedded: bool

    def url_for(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def _admin_kwargs(self) -> dict[str, Any]:
        query = dict(self.url.query)
        return {
            "host": query.get("host") or self.url.host or "127.0.0.1",
            "port": int(query.get("port") or self.url.port or 5432),  # type: ignore[arg-type]
            "user": self.url.username or "postgres",
            "password": self.url.password,
            "database": self.url.database or "postgres",
        }

    async def create_database(self, name: str) -> None:
        conn = await asyncpg.connect(**self._admin_kwargs())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(**self._admin_kwargs())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def embedded_postgres_running(data_dir: Path) -> bool:
    """Whether the embedded server of a pollhook data dir is up (its postmaster lives)."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server a test's pollhook processes left running under `data_dir`
    (in a child process: starting the package's handle changes this process's environment)."""
    if not embedded_postgres_running(data_dir):
        return
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from app.core.embedded import start_embedded; "
            "start_embedded(__import__('pathlib').Path(sys.argv[1])).stop()",
            str(data_dir),
        ],
        check=False,
        timeout=60,
    )


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, engine: AsyncEngine | None = None, *, key: str | None = ACME_KEY
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in this process, its lifespan running, and a client that sends `key`
    (none when None) and sees the error answers a real client would."""
    async with app_client(create_app(settings, engine=engine), key=key) as http:
        yield http


@contextlib.asynccontextmanager
async def app_client(
    app: FastAPI, *, key: str | None = ACME_KEY
) -> AsyncIterator[httpx.AsyncClient]:
    """`api_client` for an app the test built or changed itself (a route added, a limiter on
    a fake clock)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://pollhook.test",
            headers=headers,
        ) as http,
    ):
        yield http


def self_signed_cert(directory: Path, name: str, alt_names: str) -> tuple[Path, Path] | None:
    """A two-day self-signed certificate and its key for `name` (subjectAltName
    `alt_names`, e.g. "DNS:hooks.example.test,IP:127.0.0.1"), made by the openssl command;
    None when openssl is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={alt_names}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy:
    """A TCP forwarder that can be cut and restored, to take a database away from the app."""

    def __init__(self, target_host: str, target_port: int | None, unix_path: str | None = None):
        self.target_host = target_host
        self.target_port = target_port
        self.unix_path = unix_path
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await self.server.wait_closed()
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
            self._writers.discard(dst)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 15.0) -> None:
    """Poll `check` until it holds: a condition with a deadline, never a fixed sleep."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


@contextlib.asynccontextmanager
async def refusing_postgres(sqlstate: str, message: str) -> AsyncIterator[int]:
    """A server on 127.0.0.1 (its port is yielded) that speaks just enough of the Postgres
    wire protocol to refuse SSL, then answer the startup packet with this FATAL error, as a
    real server does for a wrong password (28P01) or while starting up (57P03)."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                if payload[:4] == struct.pack("!i", 80877103):  # SSLRequest
                    writer.write(b"N")
                    await writer.drain()
                    continue
                writer.write(_error_response(sqlstate, message))
                await writer.drain()
                break
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """`response` is an error answer of the API with this status and code: the body is one
    `error` object with a message. Returns that object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def fields_of(error: dict[str, Any]) -> list[str]:
    return [d["field"] for d in error["details"]]


def cursor_at(stamp: str) -> str:
    """A cursor as a client could forge it, with any timestamp text."""
    raw = json.dumps([stamp, "00000000-0000-0000-0000-000000000000"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
