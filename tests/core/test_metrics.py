from __future__ import annotations

import re

import httpx
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.core.metrics import REGISTRY
from app.polling.worker import PollWorker
from tests.helpers import DISCARD_URL, api_client


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
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    created = await client.post("/v1/webhooks", json={"url": f"{DISCARD_URL}/hook"})
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
    assert not re.search(r"^pollhook_tasks[ {]", body, re.MULTILINE)  # no forecast yet
    async with create_sessionmaker(engine).begin() as session:
        await BudgetRepository(session).ensure_rows(settings.providers)  # as an engine starts
    poll_engine = PollWorker(settings, engine)  # not started: the forecast runs on demand
    try:
        await poll_engine.refresher.refresh()
    finally:
        await poll_engine.close()
    body = (await client.get("/metrics")).text
    assert sample(body, "pollhook_delivery_queue_depth") == 2
    assert sample(body, "pollhook_delivery_oldest_pending_seconds") >= 0
    assert sample(body, "pollhook_provider_due_backlog", '{provider="minimax"}') == 1
    assert sample(body, "pollhook_tasks", '{provider="minimax",status="pending"}') == 1
    assert sample(body, "pollhook_tasks", '{provider="jimmy",status="processing"}') == 0
    assert sample(body, "pollhook_provider_forecast_age_seconds", '{provider="minimax"}') >= 0

    # No refresh for three periods (no worker runs): the counts would pass for current ones.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE provider_state SET forecast_at = now() - interval '1 h'"))
    body = (await client.get("/metrics")).text
    assert not re.search(r"^pollhook_tasks[ {]", body, re.MULTILINE)
    assert sample(body, "pollhook_provider_forecast_age_seconds", '{provider="minimax"}') >= 3600


async def test_unknown_values_are_absent_not_zero(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    """No engine has run and nothing is pending: health, rates, forecasts and the oldest
    pending delivery have no value yet, and a 0 would read as a measurement."""
    body = (await client.get("/metrics")).text
    assert sample(body, "pollhook_delivery_queue_depth") == 0  # a count: 0 is a value
    for name in (
        "pollhook_tasks",
        "pollhook_delivery_oldest_pending_seconds",
        "pollhook_provider_healthy",
        "pollhook_provider_effective_rate_per_second",
        "pollhook_provider_poll_demand_ratio",
        "pollhook_provider_expected_detection_delay_seconds",
    ):
        assert not re.search(rf"^{name}[ {{]", body, re.MULTILINE), name
    async with create_sessionmaker(engine).begin() as session:
        await BudgetRepository(session).ensure_rows({"minimax": settings.providers["minimax"]})
        await session.execute(
            text(
                "UPDATE provider_state SET health = 'auth_failed', poll_demand_per_s = 3, "
                "poll_capacity_per_s = 6, expected_detection_delay_s = 1.5"
            )
        )
    body = (await client.get("/metrics")).text
    assert sample(body, "pollhook_provider_healthy", '{provider="minimax"}') == 0
    assert sample(body, "pollhook_provider_poll_demand_ratio", '{provider="minimax"}') == 0.5
    assert (
        sample(body, "pollhook_provider_expected_detection_delay_seconds", '{provider="minimax"}')
        == 1.5
    )
    assert 'pollhook_provider_healthy{provider="jimmy"}' not in body


async def test_shared_gauges_are_absent_while_the_database_is_down(
    settings: Settings,
) -> None:
    down = settings.model_copy(
        update={"database_url": SecretStr("postgresql+asyncpg://nobody@127.0.0.1:9/none")}
    )
    async with api_client(down, key=None) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "pollhook_polls_total" in response.text  # the process's own counters still go out
    assert "pollhook_delivery_queue_depth" not in response.text
    assert "pollhook_provider_due_backlog" not in response.text


async def test_terminal_outcomes_and_http_requests_are_counted(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    route = "/v1/tasks/{task_id}"
    cancelled = value("pollhook_task_outcomes_total", provider="minimax", status="cancelled")
    deleted = value("pollhook_http_requests_total", method="DELETE", route=route, status="200")
    timed = value("pollhook_http_request_duration_seconds_count", method="DELETE", route=route)
    unmatched = value(
        "pollhook_http_requests_total", method="GET", route="(unmatched)", status="404"
    )
    other = value("pollhook_http_requests_total", method="OTHER", route=route, status="405")

    task = (await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 7})).json()
    await client.delete(f"/v1/tasks/{task['id']}")
    await client.delete(f"/v1/tasks/{task['id']}")  # idempotent: not a second outcome
    await client.get("/no/such/path/9f3a")
    await client.request("BREW", f"/v1/tasks/{task['id']}")

    assert value("pollhook_task_outcomes_total", provider="minimax", status="cancelled") == (
        cancelled + 1
    )
    assert value("pollhook_http_requests_total", method="DELETE", route=route, status="200") == (
        deleted + 2
    )
    assert value("pollhook_http_request_duration_seconds_count", method="DELETE", route=route) == (
        timed + 2
    )
    assert value(
        "pollhook_http_requests_total", method="GET", route="(unmatched)", status="404"
    ) == (unmatched + 1)
    assert value("pollhook_http_requests_total", method="OTHER", route=route, status="405") == (
        other + 1
    )
    body = (await client.get("/metrics")).text
    assert "/no/such/path" not in body  # raw paths never become labels


async def test_metrics_never_expose_keys(client: httpx.AsyncClient) -> None:
    from tests.helpers import ACME_KEY, OTHER_KEY

    body = (await client.get("/metrics")).text
    assert ACME_KEY not in body
    assert OTHER_KEY not in body
