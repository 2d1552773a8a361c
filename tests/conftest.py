"""Test fixtures on a real Postgres.

The server is the embedded one (a throwaway cluster per run) unless
POLLHOOK_TEST_DATABASE_URL names one; either way the suite creates its own database on it,
migrates it once, and empties every table before each test.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import app.models  # noqa: F401  (every table in Base.metadata)
from app.core import migrate
from app.core.config import Settings
from app.core.db import Base, create_engine
from app.core.embedded import start_embedded
from app.polling.worker import PollWorker
from tests.helpers import ACME_KEY, ADMIN_KEYS, DISCARD, OTHER_KEY, PgServer, api_client
from tests.seaweed import seaweed_s3  # noqa: F401  (a fixture: the real S3 server)
from tests.worker_support import fast_settings

# Every table of the models: a new one is emptied between tests without being listed here.
TABLES = sorted(Base.metadata.tables)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A Postgres server and an admin URL (asyncpg DSN form) for creating databases."""
    external = os.environ.get("POLLHOOK_TEST_DATABASE_URL")
    if external:
        url = make_url(external)
        yield PgServer(url=url, embedded=False)
        return
    workdir = Path(tempfile.mkdtemp(prefix="pollhook-test-"))
    server = start_embedded(workdir, cleanup_mode="delete")
    try:
        yield PgServer(url=make_url(server.url).set(database="postgres"), embedded=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"pollhook_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await pg_server.create_database(name)
    try:
        yield pg_server.url_for(name)
    finally:
        await pg_server.drop_database(name)


@pytest_asyncio.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=20)
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> None:
    if "engine" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str) -> Settings:
    """What the API under test (and any worker a test starts) is configured with. Modules
    marked `fast_engine` run the poll worker in this process against a scripted upstream:
    there, both share the fast settings of tests/worker_support.py."""
    if request.node.get_closest_marker("fast_engine"):
        return fast_settings(database_url)
    return Settings(
        database_url=database_url,
        api_keys=[
            {"tenant": "acme", "key": ACME_KEY},
            {"tenant": "other", "key": OTHER_KEY},
        ],
        admin_keys=ADMIN_KEYS,
        # Tests that register a webhook or callback_url without delivering it use this
        # port (discard): no test registers an address off this machine.
        webhook_allow_networks=[DISCARD],
        log_format="json",
    )


@pytest_asyncio.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, engine) as http:
        yield http


@pytest_asyncio.fixture
async def run_engine(
    engine: AsyncEngine,
) -> AsyncIterator[Callable[[Settings, httpx.MockTransport], Any]]:
    """Start poll workers in this process on the test database (stopped afterwards)."""
    started: list[PollWorker] = []

    async def start(settings: Settings, transport: httpx.MockTransport) -> PollWorker:
        poll_engine = PollWorker(settings, engine, transport=transport)
        await poll_engine.start()
        started.append(poll_engine)
        return poll_engine

    yield start
    for poll_engine in started:
        await poll_engine.stop()


@pytest.fixture
def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def raw_connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(False)
    )


@pytest_asyncio.fixture
async def pg_url_unmigrated(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"pollhook_empty_{uuid.uuid4().hex[:8]}"
    await pg_server.create_database(name)
    try:
        yield pg_server.url_for(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that call configure_logging (it binds the captured stderr): put the global
    logging configuration back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
