"""The whole engine in-process: real Postgres, real adapters and HTTP client, with the
upstream answered by httpx.MockTransport (the sandbox tests cover real sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.polling.jobs import PollEngine
from tests.helpers import ACME_KEY

FAST = {
    "first_poll_delay_s": 0,
    "min_poll_interval_s": 0.05,
    "max_poll_interval_s": 0.2,
    "request_timeout_s": 2,
}


class ScriptedMinimax:
    """A MiniMax that finishes each task after `polls_to_finish` queries."""

    def __init__(self, polls_to_finish: int = 2, final: str = "Success") -> None:
        self.polls_to_finish = polls_to_finish
        self.final = final
        self.queries: dict[str, int] = {}
        self.sent_at: list[float] = []
        self.auth: set[str] = set()
        self.mode: str = "ok"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent_at.append(time.monotonic())
        self.auth.add(request.headers.get("authorization", ""))
        if self.mode == "down":
            return httpx.Response(503, text="upstream down")
        if self.mode == "bad_key":
            return httpx.Response(
                200, json={"base_resp": {"status_code": 1004, "status_msg": "auth"}}
            )
        if request.url.path == "/v1/files/retrieve":
            file_id = request.url.params["file_id"]
            return httpx.Response(
                200,
                json={
                    "file": {
                        "file_id": int(file_id),
                        "download_url": f"https://cdn.example/{file_id}.tar",
                    },
                    "base_resp": {"status_code": 0, "status_msg": "success"},
                },
            )
        task_id = request.url.params["task_id"]
        n = self.queries[task_id] = self.queries.get(task_id, 0) + 1
        status = self.final if n >= self.polls_to_finish else "Processing"
        return httpx.Response(
            200,
            json={
                "task_id": int(task_id),
                "status": status,
                "file_id": int(task_id) + 1,
                "base_resp": {"status_code": 0, "status_msg": "success"},
            },
        )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The API under test and the engine share these fast settings."""
    base = Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}],
    )
    return _settings(base)


def _settings(base: Settings, **minimax: Any) -> Settings:
    providers = {
        "minimax": {
            "kind": "minimax_t2a",
            "base_url": "https://mm.test",
            "api_key": "sk-test",
            "rate_limit_per_s": 0,
            **FAST,
            **minimax,
        },
        "jimmy": {"kind": "jimmy_soundclone", "base_url": "https://jm.test", **FAST},
    }
    return Settings(
        database_url=base.database_url,
        api_keys=base.api_keys,
        providers=providers,
        engine={"tick_s": 0.05, "lease_s": 5, "auth_retry_s": 0.3, "shutdown_grace_s": 1},
    )


@pytest_asyncio.fixture
async def run_engine(
    engine: AsyncEngine,
) -> AsyncIterator[Callable[[Settings, httpx.MockTransport], Any]]:
    started: list[PollEngine] = []

    async def start(settings: Settings, transport: httpx.MockTransport) -> PollEngine:
        poll_engine = PollEngine(settings, engine, transport=transport)
        await poll_engine.start()
        started.append(poll_engine)
        return poll_engine

    yield start
    for poll_engine in started:
        await poll_engine.stop()


async def wait_for(predicate: Callable[[], Any], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))
        return {r[0]: int(r[1]) for r in rows}


async def register_many(client: httpx.AsyncClient, n: int) -> None:
    for i in range(n):
        r = await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": 7000 + 2 * i}
        )
        assert r.status_code == 201


async def test_tasks_reach_succeeded_with_resolved_download_url(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    from app.core.metrics import REGISTRY

    def counted(outcome: str) -> float:
        labels = {"provider": "minimax", "outcome": outcome}
        return REGISTRY.get_sample_value("pollhook_polls_total", labels) or 0.0

    changed_before, unchanged_before = counted("changed"), counted("unchanged")
    upstream = ScriptedMinimax(polls_to_finish=3)
    await run_engine(_settings(settings), httpx.MockTransport(upstream))
    await register_many(client, 20)

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 20}

    await wait_for(all_done)
    assert upstream.auth == {"Bearer sk-test"}
    assert all(n == 3 for n in upstream.queries.values())  # no task polled after it finished
    task = (await client.get("/v1/tasks", params={"limit": 1})).json()["items"][0]
    assert task["polls"] == 3
    assert task["sequence"] == 2  # processing, then succeeded
    assert task["result"]["download_url"].startswith("https://cdn.example/")
    assert task["result"]["file_id"] == str(int(task["external_id"]) + 1)
    assert task["result"]["download_url_expires_at"] > task["completed_at"]
    async with engine.connect() as conn:
        events = (await conn.execute(text("SELECT type, count(*) FROM events GROUP BY type"))).all()
        leftover = await conn.scalar(
            text("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL")
        )
    assert dict(events) == {"task.processing": 20, "task.succeeded": 20}
    assert leftover == 0
    assert counted("changed") - changed_before == 40  # processing, then succeeded
    assert counted("unchanged") - unchanged_before == 20  # the poll in between


@pytest.mark.parametrize(("final", "status"), [("failed", "failed"), ("EXPIRED", "expired")])
async def test_terminal_failures(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    run_engine: Any,
    final: str,
    status: str,
) -> None:
    await run_engine(_settings(settings), httpx.MockTransport(ScriptedMinimax(1, final)))
    await register_many(client, 3)

    async def done() -> bool:
        return (await statuses(engine)) == {status: 3}

    await wait_for(done)


async def test_budget_is_respected_in_process(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=10**9)  # never finishes: pure polling load
    await run_engine(_settings(settings, rate_limit_per_s=20), httpx.MockTransport(upstream))
    await register_many(client, 60)
    await asyncio.sleep(2.5)
    sent = sorted(upstream.sent_at)
    assert len(sent) >= 40  # the budget is used, not just respected
    right = 0
    for left, start in enumerate(sent):
        while right < len(sent) and sent[right] < start + 1.0:
            right += 1
        assert right - left <= 20


async def test_outage_then_recovery_loses_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=2)
    upstream.mode = "down"
    await run_engine(_settings(settings), httpx.MockTransport(upstream))
    await register_many(client, 5)

    async def errors_seen() -> bool:
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT min(consecutive_errors) >= 2 FROM tasks")))

    await wait_for(errors_seen)
    assert await statuses(engine) == {"pending": 5}
    upstream.mode = "ok"

    async def recovered() -> bool:
        return (await statuses(engine)) == {"succeeded": 5}

    await wait_for(recovered)


async def test_bad_key_pauses_instance_and_tasks_wait(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=1)
    upstream.mode = "bad_key"
    await run_engine(_settings(settings), httpx.MockTransport(upstream))
    await register_many(client, 4)

    async def auth_failed() -> bool:
        body = (await client.get("/v1/providers")).json()
        minimax = next(p for p in body["items"] if p["name"] == "minimax")
        return bool(minimax["health"] == "auth_failed")

    await wait_for(auth_failed)
    calls = len(upstream.sent_at)
    await asyncio.sleep(0.2)
    assert len(upstream.sent_at) <= calls + 1  # paused: at most the in-flight one lands
    assert await statuses(engine) == {"pending": 4}  # waiting, not failed
    upstream.mode = "ok"  # the key works again: the periodic probe resumes the instance

    async def resumed() -> bool:
        return (await statuses(engine)) == {"succeeded": 4}

    await wait_for(resumed)
    body = (await client.get("/v1/providers")).json()
    assert next(p for p in body["items"] if p["name"] == "minimax")["health"] == "ok"


async def test_registration_wakes_the_loop_without_a_tick(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    """With ticks a minute apart, only the trigger's NOTIFY can get a fresh task polled."""
    slow_ticks = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"tick_s": 60.0})}
    )
    upstream = ScriptedMinimax(polls_to_finish=1)
    await run_engine(slow_ticks, httpx.MockTransport(upstream))
    await asyncio.sleep(0.3)  # the loop has found nothing due and gone to sleep
    started = time.monotonic()
    await register_many(client, 1)

    async def done() -> bool:
        return (await statuses(engine)) == {"succeeded": 1}

    await wait_for(done, within_s=5)
    assert time.monotonic() - started < 5


async def test_unknown_upstream_status_keeps_the_task_tracked(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=3, final="Rendering")  # not a MiniMax status
    await run_engine(settings, httpx.MockTransport(upstream))
    await register_many(client, 2)

    async def polled_past_unknown() -> bool:
        return all(n >= 4 for n in upstream.queries.values()) and len(upstream.queries) == 2

    await wait_for(polled_past_unknown)
    assert await statuses(engine) == {"processing": 2}
    async with engine.connect() as conn:
        seen = await conn.scalar(text("SELECT min(upstream_status) FROM tasks"))
    assert seen == "Rendering"
