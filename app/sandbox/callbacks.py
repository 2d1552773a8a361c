"""The sandbox's provider callbacks: when a task scripted with a `callback_url` ends, post
what its provider posts there, signed as the provider signs.

The signing is written here from the Standard Webhooks specification, not taken from
pollhook's code, so a callback pollhook verifies is a cross-check of both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Protocol

import httpx

from app.core.logging import get_logger
from app.sandbox.gate import Clock, Json
from app.sandbox.state import Provider, Sandbox, Task

# How often the sender looks for callbacks that fell due while others are queued.
TICK_S = 0.01
IDLE_TICK_S = 0.1

log = get_logger("pollhook.sandbox.callbacks")


class CallbackShape(Protocol):
    """A provider's callbacks: the body it posts when a task ends, and whether it signs."""

    signs_callbacks: bool

    def callback_body(self, task: Task, base_url: str) -> Json | None: ...


def standard_webhooks_headers(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` (v1, HMAC-SHA256 over
    `{id}.{timestamp}.{body}` keyed with the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(signed).decode(),
    }


async def send_callbacks(
    sandbox: Sandbox,
    shapes: Mapping[Provider, CallbackShape],
    clock: Clock,
    stop: asyncio.Event,
) -> None:
    """Post every due callback until `stop`; each in its own task, so a slow receiver holds
    up none of the others. A failed post is logged and not retried: a provider's callback
    is not guaranteed either, and pollhook's polling must cope."""
    pending: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(timeout=5.0) as client:
        while not stop.is_set():
            at = clock()
            for task in sandbox.due_callbacks(at.wall):
                shape = shapes.get(task.provider)
                if shape is None or task.callback_url is None:
                    continue
                job = asyncio.create_task(
                    _post(
                        client, task, shape, sandbox.origin, sandbox.config.callback_secret, clock
                    )
                )
                pending.add(job)
                job.add_done_callback(pending.discard)
            tick = TICK_S if sandbox.next_callback_at() is not None else IDLE_TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
        for job in pending:
            job.cancel()


async def _post(
    client: httpx.AsyncClient,
    task: Task,
    shape: CallbackShape,
    base_url: str,
    secret: str,
    clock: Clock,
) -> None:
    assert task.callback_url is not None
    content = shape.callback_body(task, base_url)
    if content is None:
        return  # this provider calls back on no URL
    body = json.dumps(content).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    for _ in range(task.callback_copies):
        headers = {"Content-Type": "application/json"}
        if shape.signs_callbacks:
            # The same message again, as a provider's retry (or a replay) sends it.
            headers |= standard_webhooks_headers(secret, msg_id, int(clock().wall), body)
        sent_at = clock().wall
        try:
            response = await client.post(task.callback_url, content=body, headers=headers)
            status: int | str = response.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if task.callback_sent_at is None:
            task.callback_sent_at = sent_at
        task.callbacks_sent += 1
        log.info("sandbox_callback", provider=task.provider, task=task.id, status=status)
