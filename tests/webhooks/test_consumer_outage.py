"""A webhook consumer that is down for hours (compressed to a retry schedule of fractions of a
second), over real HTTP: its port refuses connections, then it listens again on the same
port. test_delivery.py covers a consumer that never comes back and the disable rule on forged
timestamps; these follow one outage through to its end, in real time."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import deliveries_of, endpoint, eventually, finished_task, verify

# Enough attempts to span the outage and then some; each a fraction of a second apart.
LONG_SCHEDULE = [0.0, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]


def webhooks(settings: Settings, **changes: Any) -> Any:
    return settings.webhooks.model_copy(update=changes)


async def failing_since(engine: AsyncEngine, endpoint_id: str) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(
            text("SELECT failing_since FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        )


async def test_consumer_down_across_retries_then_back_gets_the_same_event(
    client: httpx.AsyncClient,
    receiver: Receiver,
    deliveries: Any,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    """Connection refused on several attempts, then the consumer is back: the event arrives
    once, with the webhook-id every attempt carried; each failed attempt is on record; the
    endpoint was never disabled (its window, days by default, did not pass) and is healthy
    again after the success."""
    hook = await endpoint(client, receiver.url("/back"))
    await receiver.stop()  # the port now refuses connections
    delivery_engine = deliveries(webhooks=webhooks(settings, retry_schedule_s=LONG_SCHEDULE))
    task = await finished_task(client, 31)

    async def refused_thrice() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items) and items[0]["attempts"] >= 3

    await eventually(refused_thrice)
    [item] = await deliveries_of(client, task["id"])
    assert item["status"] == "pending"  # still being retried, not given up
    assert await failing_since(engine, hook["id"]) is not None
    await delivery_engine.housekeeping()  # what the worker runs every minute
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["enabled"] is True

    await receiver.start()  # back, on the same port

    async def delivered() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items[0]["status"] == "succeeded")

    await eventually(delivered)
    [arrived] = receiver.at("/back")
    [item] = await deliveries_of(client, task["id"])
    assert arrived.headers["webhook-id"] == item["event_id"]
    assert verify(hook["secret"], arrived)["data"]["id"] == task["id"]
    log = item["attempt_log"]
    assert item["attempts"] == len(log) >= 4
    assert [a["status_code"] for a in log] == [None] * (len(log) - 1) + [200]
    assert all("ConnectError" in a["error"] for a in log[:-1])
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["enabled"] is True
    assert await failing_since(engine, hook["id"]) is None  # one success clears the streak


async def test_consumer_down_past_the_disable_window_then_reenabled(
    client: httpx.AsyncClient,
    receiver: Receiver,
    deliveries: Any,
    settings: Settings,
) -> None:
    """Down for longer than disable_after_s (days by default; a second here): housekeeping
    disables the endpoint, the pending retry gives up instead of knocking on, and re-enabling
    it once the consumer is back redelivers the event with its original webhook-id."""
    hook = await endpoint(client, receiver.url("/later"))
    await receiver.stop()
    delivery_engine = deliveries(
        webhooks=webhooks(settings, retry_schedule_s=LONG_SCHEDULE, disable_after_s=1.0)
    )
    task = await finished_task(client, 32)

    async def disabled() -> bool:
        await delivery_engine.housekeeping()
        return (await client.get(f"/v1/webhooks/{hook['id']}")).json()["enabled"] is False

    await eventually(disabled)
    got = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert got["disabled_reason"] == "failing without a success for 1 s"

    async def given_up() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items[0]["status"] == "failed")

    await eventually(given_up)
    [item] = await deliveries_of(client, task["id"])
    assert item["attempts"] >= 1
    assert all(a["status_code"] is None for a in item["attempt_log"])

    await receiver.start()
    patched = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert patched.status_code == 200
    assert patched.json()["enabled"] is True

    async def redelivered() -> bool:
        return len(receiver.at("/later")) == 1

    await eventually(redelivered)
    [arrived] = receiver.at("/later")
    assert arrived.headers["webhook-id"] == item["event_id"]
    assert verify(hook["secret"], arrived)["data"]["id"] == task["id"]
    await delivery_engine.housekeeping()  # the streak was reset: not disabled again
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["enabled"] is True
