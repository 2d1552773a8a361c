"""A Postgres that is restarting answers every new connection with SQLSTATE 57P03 ("the
database system is starting up") for a moment. The API must answer that with 503 and
Retry-After like any other outage, not 500 (found by bench/soak.py restarting Postgres
under load: asyncpg raises it as a plain PostgresError, which SQLAlchemy wraps as a bare
DBAPIError rather than an OperationalError)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from app.core.config import Settings
from app.core.db import create_engine
from app.main import create_app
from tests.helpers import ACME_KEY, refusing_postgres
from tests.tasks.test_endpoints import assert_error


@pytest_asyncio.fixture
async def recovering_server() -> AsyncIterator[int]:
    async with refusing_postgres("57P03", "the database system is starting up") as port:
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
