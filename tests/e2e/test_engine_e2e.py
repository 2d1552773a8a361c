"""Tasks of both providers tracked to their end by real `pollhook worker` processes against
the sandbox over real HTTP, including crashes, outages and bad keys."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import Sandbox, Worker
from tests.helpers import OPS


async def eventually(check: Callable[[], Awaitable[bool]], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def register(
    client: httpx.AsyncClient, provider: str, external_id: object, **extra: Any
) -> str:
    response = await client.post(
        "/v1/tasks", json={"provider": provider, "external_id": external_id, **extra}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def status_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))
        return {r[0]: int(r[1]) for r in rows}


async def all_terminal(engine: AsyncEngine) -> bool:
    counts = await status_counts(engine)
    return not any(counts.get(s) for s in ("pending", "queued", "processing"))


async def test_both_providers_reach_every_terminal_status(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    scripts: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
        "mm_success": ("minimax", {"duration_s": 0.6}, {}),
        "mm_failed": ("minimax", {"duration_s": 0.3, "outcome": "failed"}, {}),
        "mm_expired": (
            "minimax",
            {"duration_s": 0.3, "outcome": "expired", "status_case": "lower"},
            {},
        ),
        "mm_unknown": ("minimax", {"duration_s": 0, "outcome": "error", "error_code": 2013}, {}),
        "mm_slow": ("minimax", {"duration_s": 600}, {"deadline_s": 2}),
        "jm_clone": ("jimmy", {"duration_s": 0.6, "model": "clone", "code_as_string": True}, {}),
        "jm_audio": ("jimmy", {"duration_s": 0.3, "model": "audio", "subtitles": True}, {}),
        "jm_failed": (
            "jimmy",
            {"duration_s": 0.3, "outcome": "failed", "error_message": "voice rejected"},
            {},
        ),
        "jm_bad": ("jimmy", {"duration_s": 0, "outcome": "error", "error_code": 20002}, {}),
    }
    ids = {}
    for name, (provider, script, extra) in scripts.items():
        upstream = sandbox.task(provider=provider, **script)
        ids[name] = await register(client, provider, upstream["id"], **extra)
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="every task to end")

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    status = {name: t["status"] for name, t in tasks.items()}
    assert status == {
        "mm_success": "succeeded",
        "mm_failed": "failed",
        "mm_expired": "expired",
        "mm_unknown": "failed",
        "mm_slow": "timed_out",
        "jm_clone": "succeeded",
        "jm_audio": "succeeded",
        "jm_failed": "failed",
        "jm_bad": "failed",
    }
    mm = tasks["mm_success"]["result"]
    assert mm["download_url"].startswith(sandbox.base + "/_sandbox/files/")
    assert set(mm) == {"kind", "file_id", "download_url", "download_url_expires_at", "filename"}
    assert mm["kind"] == "minimax_t2a"
    assert mm["filename"].endswith(".tar")
    async with httpx.AsyncClient() as http:
        assert (await http.get(mm["download_url"])).status_code == 200
    clone, audio = tasks["jm_clone"]["result"], tasks["jm_audio"]["result"]
    assert clone["kind"] == audio["kind"] == "jimmy_soundclone"
    assert urlsplit(clone["audio_url"]).path.endswith(".mp3")
    assert clone["model_id"].startswith("model_")
    assert clone["subtitle_url"] is None
    assert urlsplit(audio["audio_url"]).path.endswith(".mp3")
    assert urlsplit(audio["subtitle_url"]).path.endswith(".srt")
    assert audio["model_id"] is None
    assert tasks["jm_failed"]["error"] == {"code": "failed", "message": "voice rejected"}
    assert tasks["mm_unknown"]["error"]["code"] == "2013"
    assert tasks["jm_bad"]["error"]["code"] == "20002"
    assert tasks["mm_slow"]["error"]["code"] == "deadline_exceeded"
    # Jimmy passes through queued and processing on the way; every change is one event.
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.external_id, array_agg(e.type ORDER BY e.sequence) FROM events e "
                "JOIN tasks t ON t.id = e.task_id GROUP BY t.external_id"
            )
        )
        events = {r[0]: r[1] for r in rows}
    clone_events = events[str(tasks["jm_clone"]["external_id"])]
    assert clone_events[-1] == "task.succeeded"
    assert len(clone_events) == len(set(clone_events))
    assert all(t["sequence"] == len(events[str(t["external_id"])]) for t in tasks.values())


async def test_two_workers_share_the_budget_and_never_poll_a_task_twice(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.set_rates(minimax_rate=10)  # the upstream answers 1002 beyond 10/s per key
    upstream_ids = [
        sandbox.task(provider="minimax", duration_s=1.0, status_case="title")["id"]
        for _ in range(24)
    ]
    # Both replicas are up before the work arrives, so both compete for it.
    workers = [start_worker(rate_limit_per_s=10), start_worker(rate_limit_per_s=10)]
    for upstream_id in upstream_ids:
        await register(client, "minimax", upstream_id)
    try:
        await eventually(lambda: all_terminal(engine), within_s=60, what="every task to succeed")
    except AssertionError as exc:
        logs = "\n".join(w.log()[-4000:] for w in workers)
        raise AssertionError(f"{await status_counts(engine)}\n{logs}") from exc

    assert await status_counts(engine) == {"succeeded": 24}
    stats = sandbox.stats("minimax")["e2e-sandbox-key"]
    assert stats["max_in_any_1s_window"] <= 10, stats
    assert stats["rejected_rate_limited"] == 0, stats
    # Every status query the upstream served was recorded by exactly one poll: no task was
    # polled by both workers at once (a duplicate would have been fenced off, unrecorded).
    # A poll may also be a File Retrieve alone, resumed after its first one missed a slot.
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT external_id, polls FROM tasks"))
        polls: dict[str, int] = {r[0]: r[1] for r in rows}
    for upstream_id in upstream_ids:
        seen = sandbox.info("minimax", upstream_id)
        assert seen["polls"] <= polls[str(upstream_id)] <= seen["polls"] + seen["retrieves"]
    changed = [w.log().count("task_status_changed") for w in workers]
    assert all(n > 0 for n in changed), changed  # both replicas did part of the work


async def test_worker_killed_mid_batch_loses_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.fault(kind="latency", provider="minimax", latency_s=2.0)
    upstream_ids = [sandbox.task(provider="minimax", duration_s=0)["id"] for _ in range(8)]
    for upstream_id in upstream_ids:
        await register(client, "minimax", upstream_id)
    doomed = start_worker()

    async def in_flight() -> bool:
        return int(sandbox.stats("minimax").get("e2e-sandbox-key", {}).get("requests", 0)) >= 4

    await eventually(in_flight, within_s=20, what="requests in flight")
    doomed.stop(signal.SIGKILL)
    async with engine.connect() as conn:
        held = await conn.scalar(text("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL"))
    assert held is not None
    assert held > 0  # the dead replica still holds its claims
    sandbox.clear_faults()
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="the survivor to finish")
    assert await status_counts(engine) == {"succeeded": 8}
    async with engine.connect() as conn:
        events = await conn.execute(text("SELECT task_id, count(*) FROM events GROUP BY task_id"))
        assert all(n == 1 for _, n in events)  # pending -> succeeded, exactly once each


async def test_upstream_outage_then_recovery(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    # The outage lasts until every task has seen it twice, however long the worker takes
    # to start: a fixed window could close before its first poll.
    sandbox.fault(kind="http_503", provider="minimax")
    sandbox.fault(kind="html", provider="jimmy")
    for _ in range(5):
        await register(client, "minimax", sandbox.task(provider="minimax", duration_s=0)["id"])
        await register(client, "jimmy", sandbox.task(provider="jimmy", duration_s=0)["id"])
    start_worker()

    async def erroring() -> bool:
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT min(consecutive_errors) >= 2 FROM tasks")))

    await eventually(erroring, within_s=30, what="the outage to be seen")
    assert await status_counts(engine) == {"pending": 10}  # retried, not failed
    sandbox.clear_faults()
    await eventually(lambda: all_terminal(engine), within_s=30, what="recovery after the outage")
    assert await status_counts(engine) == {"succeeded": 10}


async def test_bad_key_pauses_and_a_fixed_key_resumes(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    for _ in range(3):
        await register(client, "minimax", sandbox.task(provider="minimax", duration_s=0)["id"])
    broken = start_worker(api_key="bad-key-rotated")

    async def auth_failed() -> bool:
        items = (await client.get("/v1/providers", headers=OPS)).json()["items"]
        minimax = next(p for p in items if p["name"] == "minimax")
        return bool(minimax["health"] == "auth_failed" and "1004" in (minimax["last_error"] or ""))

    await eventually(auth_failed, within_s=15, what="auth_failed")
    assert await status_counts(engine) == {"pending": 3}  # waiting, not failed
    assert broken.stop() == 0

    start_worker()  # a restart with the fixed key
    await eventually(lambda: all_terminal(engine), within_s=20, what="tasks after the key fix")
    assert await status_counts(engine) == {"succeeded": 3}
    items = (await client.get("/v1/providers", headers=OPS)).json()["items"]
    assert next(p for p in items if p["name"] == "minimax")["health"] == "ok"


async def test_sigterm_finishes_or_releases_in_flight_work(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.fault(kind="latency", provider="minimax", latency_s=0.4, count=3)
    sandbox.fault(kind="latency", provider="minimax", latency_s=20.0)
    for _ in range(6):
        await register(client, "minimax", sandbox.task(provider="minimax", duration_s=600)["id"])
    worker = start_worker()

    async def in_flight() -> bool:
        return int(sandbox.stats("minimax").get("e2e-sandbox-key", {}).get("requests", 0)) >= 6

    await eventually(in_flight, within_s=20, what="requests in flight")
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed  # grace (1 s) plus shutdown, not the 20 s the upstream hangs
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT status, lease_owner FROM tasks"))).all()
    # Answers that came in were applied; the rest were handed back, not left leased.
    assert {r.status for r in rows} == {"processing", "pending"}
    assert all(r.lease_owner is None for r in rows)
    assert "engine_stopped" in worker.log()
