"""Outages of what pollhook depends on, over real processes and real connections.

- The database goes away under a running `pollhook api` and `pollhook worker` (a TCP proxy in
  front of Postgres is cut, then restored on the same port).
- The upstream provider's process dies (after first hanging on requests) and comes back.

The consumer-side outage (a webhook receiver down for hours) lives with the delivery tests,
in tests/webhooks/test_consumer_outage.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from app.core.config import DEFAULT_INSTANCES
from app.core.loop import LOOP_ERROR_BACKOFF_S
from tests.e2e.conftest import (
    FAST_PROVIDER,
    Sandbox,
    Worker,
    _env,
    provider_settings,
    wait_until,
)
from tests.helpers import ACME_KEY, free_port
from tests.netproxy import ThreadedProxy
from tests.webhooks.receiver import Receiver

# How long the database stays away. "A minute" in production terms, compressed for the
# suite; set POLLHOOK_TEST_DB_OUTAGE_S=60 to sit through the real thing.
DB_OUTAGE_S = float(os.environ.get("POLLHOOK_TEST_DB_OUTAGE_S", "4"))

# Webhooks to the loopback receiver, with a short retry schedule.
WEBHOOK_ENV = {
    "POLLHOOK_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    "POLLHOOK_WEBHOOKS__RETRY_SCHEDULE_S": "[0, 0.2, 0.5, 1, 2, 4]",
    "POLLHOOK_WEBHOOKS__TIMEOUT_S": "2",
}
# The worker's loops that reconnect to the database on their own, and what each one logs per
# failed attempt: a loop per provider instance (every built-in one runs), the delivery loop,
# and two NOTIFY listeners (new tasks, new deliveries).
LOOP_ERRORS = {
    "poll_loop_error": len(DEFAULT_INSTANCES),
    "delivery_loop_error": 1,
    "listener_error": 2,
}


async def eventually(check: Callable[[], Awaitable[bool]], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_events(log: str) -> list[dict[str, Any]]:
    events = []
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a non-JSON line (a library printing): not ours to count
        if isinstance(event, dict):
            events.append(event)
    return events


class Api:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
        self.proc = proc
        self.base = base
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_api(sandbox_server: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """`pollhook api` as a process of its own, on the given database URL."""
    apis: list[Api] = []

    def start(db_url: str, extra_env: dict[str, str] | None = None) -> Api:
        port = free_port()
        env = _env(db_url, provider_settings(sandbox_server))
        env.update(WEBHOOK_ENV)
        env.update(extra_env or {})
        env["POLLHOOK_API_KEYS"] = f"acme:{ACME_KEY}"
        log_path = tmp_path / f"api-{len(apis)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "api", "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        api = Api(proc, f"http://127.0.0.1:{port}", log_path)
        apis.append(api)

        def up() -> bool:
            try:
                return httpx.get(f"{api.base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None  # died: stop waiting, the assert says why

        wait_until(up, within_s=30, what="the API to start")
        assert proc.poll() is None, api.log()
        return api

    yield start
    for api in apis:
        if api.proc.poll() is None:
            api.proc.send_signal(signal.SIGTERM)
            try:
                api.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                api.proc.kill()
                api.proc.wait(timeout=10)


@pytest.fixture
def db_proxy(database_url: str) -> Iterator[ThreadedProxy]:
    proxy = ThreadedProxy(database_url)
    yield proxy
    proxy.close()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["retry-after"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("outage_s", [DB_OUTAGE_S])
async def test_database_outage_api_and_worker_ride_it_out(
    outage_s: float,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
    start_api: Callable[[str], Api],
    db_proxy: ThreadedProxy,
) -> None:
    """Postgres disappears under a running API and worker for `outage_s`: the API answers 503
    with the error shape (writes, reads, /readyz with a reason), the worker stays up and its
    loops back off instead of spinning, and once the database is back both carry on by
    themselves: a task in flight before the outage and one registered after it are polled to
    the end and their webhooks delivered, once per event."""
    api = start_api(db_proxy.url)
    worker = start_worker(db_url=db_proxy.url, extra_env=WEBHOOK_ENV)
    receiver = Receiver()
    await receiver.start()
    http = httpx.AsyncClient(
        base_url=api.base, headers={"Authorization": f"Bearer {ACME_KEY}"}, timeout=15
    )
    try:
        # Before: a task the worker is already tracking, which ends upstream mid-outage.
        before_upstream = sandbox.task(provider="minimax", duration_s=outage_s / 2)
        created = await http.post(
            "/v1/tasks",
            json={
                "provider": "minimax",
                "external_id": before_upstream["id"],
                "callback_url": receiver.url("/before"),
            },
        )
        assert created.status_code == 201, created.text
        before = created.json()["id"]

        async def processing() -> bool:
            task = (await http.get(f"/v1/tasks/{before}")).json()
            return bool(task["status"] == "processing")

        await eventually(processing, within_s=15, what="the first poll")

        db_proxy.cut()
        cut_at = len(worker.log())

        # The API: the clear error on writes and reads, not ready, but alive.
        assert_unavailable(
            await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 77})
        )
        assert_unavailable(await http.get(f"/v1/tasks/{before}"))
        assert_unavailable(await http.get("/v1/tasks"))
        ready = await http.get("/readyz")
        assert_unavailable(ready)
        assert ready.json()["error"]["details"]["reason"]
        assert (await http.get("/healthz")).status_code == 200

        # The worker: alive for the whole outage, and each of its loops says what is wrong.
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log()[-4000:]
            assert api.proc.poll() is None, api.log()[-4000:]
            await asyncio.sleep(0.1)
        outage_log = log_events(worker.log()[cut_at:])
        db_proxy.restore()

        errors = {name: [e for e in outage_log if e.get("event") == name] for name in LOOP_ERRORS}
        # Every instance's loop, the built-in ones without a key included.
        assert {e.get("provider") for e in errors["poll_loop_error"]} == set(DEFAULT_INSTANCES)
        assert errors["delivery_loop_error"], "the delivery loop did not report the outage"
        # Backing off, not spinning: a loop's failed attempts come at most once per backoff
        # floor (the floor is what its first wait is; later waits double). A hot loop, or a
        # backoff that the scheduler's tick cuts short, makes many times more.
        floors = {
            "poll_loop_error": LOOP_ERROR_BACKOFF_S[0],
            "delivery_loop_error": LOOP_ERROR_BACKOFF_S[0],
            "listener_error": LOOP_ERROR_BACKOFF_S[0],
        }
        for name, loops in LOOP_ERRORS.items():
            bound = loops * (outage_s / floors[name] + 2)
            assert len(errors[name]) <= bound, (name, len(errors[name]), bound)

        # After: both processes recover without a restart.
        async def api_ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(api_ready, within_s=15, what="/readyz after the outage")
        after_upstream = sandbox.task(provider="minimax", duration_s=0)
        created = await http.post(
            "/v1/tasks",
            json={
                "provider": "minimax",
                "external_id": after_upstream["id"],
                "callback_url": receiver.url("/after"),
            },
        )
        assert created.status_code == 201, created.text
        after = created.json()["id"]

        async def delivered() -> bool:
            for task_id in (before, after):
                items = (await http.get(f"/v1/tasks/{task_id}/deliveries")).json()["items"]
                if not items or any(d["status"] != "succeeded" for d in items):
                    return False
            return True

        try:
            await eventually(delivered, within_s=60, what="both tasks' webhooks")
        except AssertionError as exc:
            raise AssertionError(worker.log()[-6000:]) from exc

        secret = (await http.get("/v1/signing-secret")).json()["secret"]
        for task_id, path in ((before, "/before"), (after, "/after")):
            task = (await http.get(f"/v1/tasks/{task_id}")).json()
            assert task["status"] == "succeeded"
            arrived = receiver.at(path)
            assert len({r.headers["webhook-id"] for r in arrived}) == 1  # one event
            payload = Webhook(secret).verify(arrived[0].body, arrived[0].headers)
            assert payload["type"] == "task.succeeded"
            assert payload["data"]["id"] == task_id
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT t.id, t.sequence, count(e.id) AS events, "
                    "count(e.id) FILTER (WHERE e.type = 'task.succeeded') AS terminal "
                    "FROM tasks t JOIN events e ON e.task_id = t.id GROUP BY t.id"
                )
            )
            by_task = {str(r.id): r for r in rows}
        assert set(by_task) == {before, after}
        for row in by_task.values():
            assert row.terminal == 1  # one terminal event, not one per recovery
            assert row.events == row.sequence  # every status change has its event, once
        assert by_task[before].sequence == 2  # pending -> processing -> succeeded
        assert worker.proc.poll() is None
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        await http.aclose()
        await receiver.stop()


class SandboxProcess:
    """`pollhook sandbox` on a fixed port, to stop and start again like a provider's host."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sandbox:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "sandbox", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.base}/_sandbox/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, within_s=30, what="the upstream to start")
        box = Sandbox(self.base)
        box.set_rates(minimax_rate=0, jimmy_rate=0)
        return box

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.timeout(120)
async def test_upstream_hangs_then_its_process_dies_and_comes_back(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """The provider first stops answering (requests hang past the timeout), then its process
    is gone (connection refused), then it is back on the same port. Tasks stay active
    throughout, count their errors, poll less often while failing, and end normally."""
    upstream = SandboxProcess(free_port(), tmp_path / "upstream.log")
    box = upstream.start()
    ids = [91_000_000_000_000 + i for i in range(4)]
    try:
        for upstream_id in ids:
            box.task(provider="minimax", id=upstream_id, duration_s=600)
            response = await client.post(
                "/v1/tasks", json={"provider": "minimax", "external_id": upstream_id}
            )
            assert response.status_code == 201, response.text
        worker = start_worker(base_url=upstream.base, request_timeout_s=0.5)

        async def rows() -> list[Any]:
            async with engine.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT status, consecutive_errors, poll_error->>'code' AS error_code, "
                        "extract(epoch FROM next_poll_at - last_polled_at) AS gap FROM tasks"
                    )
                )
                return list(result)

        async def all_rows(predicate: Callable[[Any], bool]) -> bool:
            found = await rows()
            return len(found) == len(ids) and all(predicate(r) for r in found)

        await eventually(
            lambda: all_rows(lambda r: r.status == "processing"), within_s=15, what="processing"
        )

        # 1. It hangs: every poll times out.
        box.fault(kind="timeout", provider="minimax")
        await eventually(
            lambda: all_rows(lambda r: r.consecutive_errors >= 2 and r.error_code == "timeout"),
            within_s=20,
            what="timeouts to be recorded",
        )
        # 2. Its process is gone: connection refused.
        upstream.kill()
        box.http.close()
        await eventually(
            lambda: all_rows(
                lambda r: r.consecutive_errors >= 4 and r.error_code == "connection_error"
            ),
            within_s=30,
            what="connection errors to be recorded",
        )
        for row in await rows():
            assert row.status == "processing"  # still tracked, not failed
            # Backed off past the normal schedule: after errors, the next poll is further
            # away than the longest interval a healthy task ever waits.
            assert row.gap > FAST_PROVIDER["max_poll_interval_s"], row
        assert worker.proc.poll() is None

        # 3. It is back, on the same port, with the tasks now finished. A real provider that
        # comes back still knows its tasks; this one learns them after it listens, and a
        # poll in between is answered "task not found" (2013), which fails a task for good.
        # So the worker is held (SIGSTOP) until the tasks are there: however slow the
        # restart, no poll falls in that gap.
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            box = upstream.start()
            for upstream_id in ids:
                box.task(provider="minimax", id=upstream_id, duration_s=0)
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        await eventually(
            lambda: all_rows(lambda r: r.status == "succeeded" and r.consecutive_errors == 0),
            within_s=30,
            what="the tasks to finish after the upstream came back",
        )
        async with engine.connect() as conn:
            events = await conn.execute(
                text("SELECT array_agg(type ORDER BY sequence) FROM events GROUP BY task_id")
            )
            assert [list(e[0]) for e in events] == [["task.processing", "task.succeeded"]] * 4
        box.http.close()
    finally:
        upstream.kill()
