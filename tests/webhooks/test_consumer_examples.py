"""The consumer examples of docs/consumers.md, run as written against real deliveries.

Each example is started as its own process (the way a reader runs it), registered as a
webhook endpoint, and fed by the real delivery engine; then the test speaks to it directly
with forged, stale, replayed and out-of-order events. The by-hand verifier is checked
against a callback_url delivery (tenant secret) and a delivery during a secret rotation
(two signatures). docs/consumers.md must show each file exactly as it is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from app.webhooks import signing
from tests.helpers import eventually, free_port
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import endpoint, finished_task

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
CONSUMERS_MD = EXAMPLES.parent / "consumers.md"


class Consumer:
    """An example consumer in its own process; `lines` is what it printed."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.argv, self.env, self.port = argv, env, port
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pollhook"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=EXAMPLES,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

        async def listening() -> bool:
            assert self.proc is not None
            assert self.proc.returncode is None, self.lines
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            return False

        await eventually(listening, within_s=30)

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip())

    def handled(self) -> list[str]:
        return [line for line in self.lines if line.startswith("task.")]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader


def python_consumer(secret: str, port: int) -> Consumer:
    argv = [sys.executable, "-m", "uvicorn", "consumer:app", "--host", "127.0.0.1"]
    return Consumer([*argv, "--port", str(port)], {"POLLHOOK_WEBHOOK_SECRET": secret}, port)


def node_consumer(secret: str, port: int) -> Consumer:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    if not (EXAMPLES / "node_modules" / "standardwebhooks").is_dir():
        pytest.fail("run scripts/bootstrap --dev: it installs docs/examples' npm dependencies")
    env = {"POLLHOOK_WEBHOOK_SECRET": secret, "PORT": str(port)}
    return Consumer([node, "consumer.mjs"], env, port)


@contextlib.asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[Consumer]:
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def signed(secret: str, body: dict[str, Any], *, msg_id: str, age_s: int = 0) -> dict[str, Any]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = signing.headers([secret], msg_id, int(time.time()) - age_s, raw)
    return {"content": raw, "headers": {**headers, "content-type": "application/json"}}


@pytest.mark.parametrize("make", [python_consumer, node_consumer], ids=["python", "node"])
async def test_example_consumer_verifies_deduplicates_and_orders(
    client: httpx.AsyncClient, deliveries: Any, make: Callable[[str, int], Consumer]
) -> None:
    port = free_port()
    hook = await endpoint(client, f"http://127.0.0.1:{port}/hooks/pollhook")
    consumer = make(hook["secret"], port)
    async with running(consumer):
        deliveries()
        task = await finished_task(client, 31)

        async def handled() -> bool:
            return bool(consumer.handled())

        await eventually(handled)
        assert consumer.handled() == [f"task.cancelled {task['id']} cancelled"]
        [delivery] = (await client.get(f"/v1/tasks/{task['id']}/deliveries")).json()["items"]

        event = {"type": "task.cancelled", "timestamp": task["updated_at"], "data": task}
        async with httpx.AsyncClient() as http:
            forged = signed("whsec_" + "B" * 44, event, msg_id="msg_forged")
            stale = signed(hook["secret"], event, msg_id="msg_stale", age_s=301)
            replayed = signed(hook["secret"], event, msg_id=delivery["event_id"])
            older = {**event, "data": {**task, "status": "pending", "sequence": 0}}
            newer = {**event, "data": {**task, "sequence": task["sequence"] + 1}}
            answers = [
                (await http.post(consumer.url, **forged)).status_code,
                (await http.post(consumer.url, **stale)).status_code,
                (await http.post(consumer.url, **replayed)).status_code,
                (
                    await http.post(consumer.url, **signed(hook["secret"], older, msg_id="m1"))
                ).status_code,
                (
                    await http.post(consumer.url, **signed(hook["secret"], newer, msg_id="m2"))
                ).status_code,
            ]
        assert answers == [400, 400, 204, 204, 204]
        # Only the newer event got through: the forged, stale, replayed and older ones did not.
        assert consumer.handled() == [f"task.cancelled {task['id']} cancelled"] * 2


def by_hand() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_by_hand", EXAMPLES / "verify_by_hand.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_by_hand_verification_of_callback_and_rotated_deliveries(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    verify = by_hand().verify
    hook = await endpoint(client, receiver.url("/rotated"))
    old_secret = hook["secret"]
    new_secret = (await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")).json()["secret"]
    tenant_secret = (await client.get("/v1/signing-secret")).json()["secret"]
    deliveries()
    await finished_task(client, 32, callback_url=receiver.url("/callback"))

    async def both() -> bool:
        return bool(receiver.at("/rotated") and receiver.at("/callback"))

    await eventually(both)
    [callback] = receiver.at("/callback")
    verify(tenant_secret, callback.headers, callback.body)  # callback_url: the tenant secret
    with pytest.raises(ValueError, match="no webhook-signature"):
        verify(old_secret, callback.headers, callback.body)
    [rotated] = receiver.at("/rotated")
    assert len(rotated.headers["webhook-signature"].split(" ")) == 2
    verify(old_secret, rotated.headers, rotated.body)  # either secret, during the grace period
    verify(new_secret, rotated.headers, rotated.body)
    with pytest.raises(ValueError, match="no webhook-signature"):
        verify(new_secret, rotated.headers, rotated.body + b" ")
    stale = {**rotated.headers, "webhook-timestamp": str(int(time.time()) - 301)}
    with pytest.raises(ValueError, match="tolerance"):
        verify(new_secret, stale, rotated.body)


def test_consumers_md_shows_each_example_as_it_is() -> None:
    text = CONSUMERS_MD.read_text()
    blocks = re.findall(r"^```(?:python|js|go)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    for name in ("consumer.py", "consumer.mjs", "consumer.go", "verify_by_hand.py"):
        assert (EXAMPLES / name).read_text() in blocks, name
    lock = json.loads((EXAMPLES / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/standardwebhooks"]["version"]
    assert f"standardwebhooks@{pinned}" in (EXAMPLES / "consumer.mjs").read_text()
