from __future__ import annotations

import re

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def sample(body: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.MULTILINE)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


async def test_metrics_describe_shared_state(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    client.headers.pop("Authorization")  # no key needed, like the health routes
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert sample(body, "pollhook_delivery_queue_depth") == 0
    assert (
        sample(body, "pollhook_provider_configured_rate_per_second", '{provider="minimax"}') == 10
    )
    assert sample(body, "pollhook_provider_due_backlog", '{provider="minimax"}') == 0
    for name in (
        "pollhook_polls_total",
        "pollhook_deliveries_total",
        "pollhook_delivery_attempt_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body


async def test_metrics_count_backlog_and_pending_deliveries(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await client.post("/v1/webhooks", json={"url": "http://93.184.215.14/hook"})
    assert created.status_code == 201
    for i in range(3):
        task = (
            await client.post("/v1/tasks", json={"provider": "minimax", "external_id": i + 1})
        ).json()
        if i < 2:
            await client.delete(f"/v1/tasks/{task['id']}")  # an event, so a delivery
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET next_poll_at = now() - interval '1 minute'"))
    body = (await client.get("/metrics")).text
    assert sample(body, "pollhook_delivery_queue_depth") == 2
    assert sample(body, "pollhook_delivery_oldest_pending_seconds") >= 0
    assert sample(body, "pollhook_provider_due_backlog", '{provider="minimax"}') == 1
    assert sample(body, "pollhook_provider_healthy", '{provider="minimax"}') == 1


async def test_metrics_never_expose_keys(client: httpx.AsyncClient) -> None:
    from tests.helpers import ACME_KEY, OTHER_KEY

    body = (await client.get("/metrics")).text
    assert ACME_KEY not in body
    assert OTHER_KEY not in body
