"""Every error the API answers has one shape (app/core/error_handlers.py): unknown routes and
methods, undecodable bodies, unexpected exceptions (internals hidden), and a database that
is down or restarting (503 with Retry-After).

A Postgres that is restarting answers every new connection with SQLSTATE 57P03 ("the
database system is starting up") for a moment. The API must answer that with 503 and
Retry-After like any other outage, not 500 (found by bench/soak.py restarting Postgres
under load: asyncpg raises it as a plain PostgresError, which SQLAlchemy wraps as a bare
DBAPIError rather than an OperationalError)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from app.main import create_app
from tests.helpers import ACME_KEY, api_client, app_client, assert_error, refusing_postgres


@pytest_asyncio.fixture
async def recovering_server() -> AsyncIterator[int]:
    async with refusing_postgres("57P03", "the database system is starting up") as port:
        yield port


async def test_database_starting_up_is_503(settings: Settings, recovering_server: int) -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{recovering_server}/x")
    try:
        async with api_client(settings, engine) as http:
            write = await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 1})
            read = await http.get("/v1/tasks")
            ready = await http.get("/readyz")
    finally:
        await engine.dispose()
    for response in (write, read, ready):
        assert_error(response, 503, "service_unavailable")
    assert write.headers["retry-after"] == "5"


class TestErrorShape:
    async def test_unknown_route(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/v1/nothing-here"), 404, "not_found")

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.put("/v1/tasks"), 405, "method_not_allowed")

    async def test_unexpected_error_hides_internals(
        self, settings: Settings, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
    ) -> None:
        app = create_app(settings, engine=engine)
        boom = APIRouter()

        @boom.get("/boom")
        async def explode() -> None:
            raise RuntimeError(f"secret detail {ACME_KEY}")

        app.include_router(boom)
        async with app_client(app, key=None) as http:
            response = await http.get("/boom")
        error = assert_error(response, 500, "internal_error")
        assert error == {"code": "internal_error", "message": "internal server error"}
        assert "secret detail" not in response.text
        assert "Traceback" not in response.text

    async def test_database_down_is_503(self, settings: Settings) -> None:
        from app.core.db import create_engine

        dead = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
        async with api_client(settings, dead) as http:
            write = await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 1})
            ready = await http.get("/readyz")
            alive = await http.get("/healthz")
        assert_error(write, 503, "service_unavailable")
        assert write.headers["retry-after"] == "5"
        assert_error(ready, 503, "service_unavailable")
        assert alive.status_code == 200
        await dead.dispose()


class TestFrameworkErrors:
    async def test_405_lists_every_method_of_the_path(self, client: httpx.AsyncClient) -> None:
        for path, methods in (
            ("/v1/tasks", {"GET", "POST"}),
            ("/v1/tasks/00000000-0000-0000-0000-000000000000", {"GET", "DELETE"}),
            ("/v1/webhooks/00000000-0000-0000-0000-000000000000", {"GET", "PATCH", "DELETE"}),
        ):
            response = await client.options(path)
            assert_error(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) >= methods

    async def test_undecodable_body_is_invalid_json(self, client: httpx.AsyncClient) -> None:
        response = await client.patch(
            "/v1/webhooks/00000000-0000-0000-0000-000000000000",
            content=b"\x17\xc3.U\xa3Y",
            headers={"content-type": "application/json"},
        )
        assert_error(response, 422, "invalid_json")
