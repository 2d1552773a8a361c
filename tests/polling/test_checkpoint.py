"""Once MiniMax said Success, every later poll of the task is a File Retrieve alone,
however the retrieve before it failed: the checkpoint the adapter left is stored with the
task on every way a poll can end (real engine, real Postgres, upstream behind
httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.providers.minimax_t2a import QUERY_PATH, RETRIEVE_PATH
from tests.helpers import eventually
from tests.worker_support import _settings, statuses

pytestmark = pytest.mark.fast_engine

OK = {"status_code": 0, "status_msg": "success"}


def answer(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None
) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(status, json=body, headers=headers)


def boom() -> httpx.Response:
    raise RuntimeError("a bug below the adapter")


class SucceedsThenRetrieveFails:
    """Success at once; then the File Retrieve fails as scripted before giving the file."""

    def __init__(self, failures: list[Callable[[], httpx.Response]]) -> None:
        self.failures = failures
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == QUERY_PATH:
            task_id = int(request.url.params["task_id"])
            body = {
                "task_id": task_id,
                "status": "Success",
                "file_id": task_id + 1,
                "base_resp": OK,
            }
            return httpx.Response(200, json=body)
        if self.failures:
            return self.failures.pop(0)()
        file_id = int(request.url.params["file_id"])
        url = f"https://cdn.example/{file_id}.tar"
        return httpx.Response(200, json={"file": {"download_url": url}, "base_resp": OK})


async def test_a_failing_retrieve_resumes_at_the_retrieve_however_it_failed(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = SucceedsThenRetrieveFails(
        [
            answer(503, {"error": "unavailable"}),  # a TransientError
            answer(200, {"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}),
            boom,  # an unexpected exception: recorded as internal
            answer(200, {"base_resp": {"status_code": 2013, "status_msg": "no file"}}),
            answer(200, {"file": {"file_id": 1}, "base_resp": OK}),  # no URL yet
            answer(200, {"file": "garbage", "base_resp": OK}),  # malformed
        ]
    )
    await run_engine(_settings(settings), httpx.MockTransport(upstream))
    created = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 41})
    assert created.status_code == 201

    async def done() -> bool:
        return (await statuses(engine)) == {"succeeded": 1}

    await eventually(done, within_s=30)
    assert upstream.paths == [QUERY_PATH] + [RETRIEVE_PATH] * 7
    task = (await client.get(f"/v1/tasks/{created.json()['id']}")).json()
    assert task["result"]["file_id"] == "42"
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT checkpoint FROM tasks")) is None
