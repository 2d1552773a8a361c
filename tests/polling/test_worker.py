"""The whole engine in-process: real Postgres, real adapters and HTTP client, with the
upstream answered by httpx.MockTransport (the sandbox tests cover real sockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.polling.worker import PollWorker
from tests.helpers import eventually
from tests.worker_support import (
    ScriptedMinimax,
    _settings,
    register_many,
    statuses,
)

pytestmark = pytest.mark.fast_engine


async def test_tasks_reach_succeeded_with_resolved_download_url(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    from app.core.metrics import REGISTRY

    def counted(outcome: str) -> float:
        labels = {"provider": "minimax", "outcome": outcome}
        return REGISTRY.get_sample_value("pollhook_polls_total", labels) or 0.0

    def succeeded() -> float:
        labels = {"provider": "minimax", "status": "succeeded"}
        return REGISTRY.get_sample_value("pollhook_task_outcomes_total", labels) or 0.0

    changed_before, unchanged_before = counted("changed"), counted("unchanged")
    succeeded_before = succeeded()
    upstream = ScriptedMinimax(polls_to_finish=3)
    await run_engine(_settings(settings), httpx.MockTransport(upstream))
    await register_many(client, 20)

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 20}

    await eventually(all_done)
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
    assert succeeded() - succeeded_before == 20


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

    await eventually(done)


async def test_budget_is_respected_in_process(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=10**9)  # never finishes: pure polling load
    await run_engine(_settings(settings, rate_limit_per_s=20), httpx.MockTransport(upstream))
    await register_many(client, 60)

    async def budget_used() -> bool:
        # Every task polled at least once (60 requests: three windows' worth at 20/s), as
        # soon as the machine gets there: the budget is used, not just respected.
        return len(upstream.sent_at) >= 60

    await eventually(budget_used, within_s=60.0)
    sent = sorted(upstream.sent_at)
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

    await eventually(errors_seen)
    assert await statuses(engine) == {"pending": 5}
    upstream.mode = "ok"

    async def recovered() -> bool:
        return (await statuses(engine)) == {"succeeded": 5}

    await eventually(recovered)


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

    await eventually(auth_failed)
    await asyncio.sleep(0.2)  # the requests in flight when the refusal came land
    calls = len(upstream.sent_at)
    await asyncio.sleep(0.6)
    # Paused: each of the 4 tasks is parked for auth_retry_s (0.3 s, jittered) after each
    # refusal, so at most 3 probes each in 0.6 s, where polling on would make 12 each
    # (every tick, 0.05 s). The old bound, one request in 0.2 s, broke on a busy machine:
    # the tasks not yet polled when the refusal came are probed together once it lifts.
    assert len(upstream.sent_at) - calls <= 4 * 3
    assert await statuses(engine) == {"pending": 4}  # waiting, not failed
    upstream.mode = "ok"  # the key works again: the periodic probe resumes the instance

    async def resumed() -> bool:
        return (await statuses(engine)) == {"succeeded": 4}

    await eventually(resumed)
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

    await eventually(done, within_s=5)
    assert time.monotonic() - started < 5


async def test_unknown_upstream_status_keeps_the_task_tracked(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=3, final="Rendering")  # not a MiniMax status
    await run_engine(settings, httpx.MockTransport(upstream))
    await register_many(client, 2)

    async def polled_past_unknown() -> bool:
        return all(n >= 4 for n in upstream.queries.values()) and len(upstream.queries) == 2

    await eventually(polled_past_unknown)
    assert await statuses(engine) == {"processing": 2}
    async with engine.connect() as conn:
        seen = await conn.scalar(text("SELECT min(upstream_status) FROM tasks"))
    assert seen == "Rendering"


async def test_a_waiting_task_says_why_and_a_new_key_resumes_it_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    """A key MiniMax refuses: the task shows `auth_failed` with MiniMax's own text and no
    secret. A restart with another key polls the parked tasks right away, not after
    engine.auth_retry_s (an hour here, so only the resume can finish them)."""

    def refusing(request: httpx.Request) -> httpx.Response:
        quoted = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(
            200, json={"base_resp": {"status_code": 1004, "status_msg": f"bad key {quoted}"}}
        )

    def hour(key: str) -> Settings:
        keyed = _settings(settings, api_key=key)
        engine_settings = keyed.engine.model_copy(update={"auth_retry_s": 3600.0})
        return keyed.model_copy(update={"engine": engine_settings})

    first = PollWorker(hour("sk-wrong-key"), engine, transport=httpx.MockTransport(refusing))
    await first.start()
    try:
        await register_many(client, 3)
        waiting = (await client.get("/v1/tasks")).json()["items"]

        async def parked() -> list[dict[str, Any]]:
            tasks = [(await client.get(f"/v1/tasks/{t['id']}")).json() for t in waiting]
            return [t for t in tasks if t["last_poll_error"]]

        async def one_parked() -> bool:
            return bool(await parked())

        # The first refusal pauses the instance: the other tasks wait unpolled behind it.
        await eventually(one_parked)
        shown = (await parked())[0]
    finally:
        await first.stop()
    assert shown["status"] == "pending"
    error = shown["last_poll_error"]
    assert (error["reason"], error["code"]) == ("auth_failed", "1004")
    assert error["message"] == "bad key [redacted]"

    upstream = ScriptedMinimax(polls_to_finish=1)
    await run_engine(hour("sk-fixed-key"), httpx.MockTransport(upstream))

    async def resumed() -> bool:
        return (await statuses(engine)) == {"succeeded": 3}

    await eventually(resumed)
    assert upstream.auth == {"Bearer sk-fixed-key"}
    done = (await client.get(f"/v1/tasks/{shown['id']}")).json()
    assert done["last_poll_error"] is None


async def test_an_instance_without_a_key_sends_nothing_and_its_tasks_say_why(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    """The quick start has no provider keys: a task registered there must not reach the real
    provider with an empty key; it waits and names the variable to set."""
    sent: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(401)

    await run_engine(_settings(settings, api_key=None), httpx.MockTransport(upstream))
    task = (await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 5})).json()

    async def waiting() -> bool:
        shown = (await client.get(f"/v1/tasks/{task['id']}")).json()
        return shown["last_poll_error"] is not None

    await eventually(waiting)
    shown = (await client.get(f"/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "pending"
    assert shown["polls"] == 0
    error = shown["last_poll_error"]
    assert (error["reason"], error["code"]) == ("auth_failed", "missing_key")
    assert "POLLHOOK_PROVIDERS__MINIMAX__API_KEY" in error["message"]
    providers = (await client.get("/v1/providers")).json()["items"]
    assert next(p for p in providers if p["name"] == "minimax")["health"] == "auth_failed"
    assert sent == []
