"""The Deliveries, Endpoints and Audit pages in headless Chromium, against a live server, the
delivery loop and a webhook receiver on loopback."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from app.core.config import Settings
from app.webhooks.delivery import DeliveryWorker
from tests import helpers
from tests.helpers import ACME_KEY, ADMIN_KEYS, NO_LINKS, OPS_KEY, OTHER_KEY, READER_KEY
from tests.ui import browser_sign_in
from tests.ui.conftest import LiveApp
from tests.webhooks.receiver import Answer, Receiver

eventually = functools.partial(helpers.eventually, within_s=10.0)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Loopback opened for the receiver; two attempts, then a delivery has failed."""
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        admin_keys=ADMIN_KEYS,
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        webhooks={"retry_schedule_s": [0, 0.2], "timeout_s": 1.0, "lease_s": 3},
        engine={"tick_s": 0.05, "shutdown_grace_s": 1},
        data_dir=tmp_path / "data",
    )


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def delivering(settings: Settings, engine: AsyncEngine) -> AsyncIterator[None]:
    worker = DeliveryWorker(settings, engine, "ui-browser", NO_LINKS)
    worker.start()
    yield
    await worker.stop()


async def _failed(client: httpx.AsyncClient, count: int) -> None:
    async def all_failed() -> bool:
        listed = await client.get("/v1/deliveries", params={"status": "failed"})
        return len(listed.json()["items"]) == count

    await eventually(all_failed)


async def _cancelled_task(client: httpx.AsyncClient, external_id: int) -> str:
    task = await client.post("/v1/tasks", json={"provider": "minimax", "external_id": external_id})
    await client.delete(f"/v1/tasks/{task.json()['id']}")
    task_id: str = task.json()["id"]
    return task_id


def _verified(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


@pytest.mark.usefixtures("delivering")
async def test_retry_one_and_all_from_the_deliveries_page(
    page: Page, live_app: LiveApp, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = (await client.post("/v1/webhooks", json={"url": receiver.url("/hook")})).json()
    receiver.on("/hook", Answer(500, b"down"))
    first = await _cancelled_task(client, 1)
    await _failed(client, 1)
    receiver.on("/hook", Answer(200, b"ok"))

    await browser_sign_in(page, live_app.url, ACME_KEY, "/ui/deliveries")
    row = page.locator("table.deliveries tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("failed")
    await expect(row).to_contain_text("HTTP 500")
    await expect(row.locator(f'a[href="/ui/tasks/{first}"]')).to_be_visible()
    await row.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("status")).to_contain_text("goes out again now")

    async def delivered() -> bool:
        return any(r.path == "/hook" for r in receiver.received[2:])

    await eventually(delivered)
    payload = _verified(hook["secret"], receiver.at("/hook")[2])
    assert (payload["type"], payload["data"]["id"]) == ("task.cancelled", first)

    # Two more fail; "Retry all matching" counts them, asks, and retries both.
    receiver.on("/hook", Answer(500, b"down again"))
    await _cancelled_task(client, 2)
    await _cancelled_task(client, 3)
    await _failed(client, 2)
    receiver.on("/hook", Answer(200, b"ok"))
    before = len(receiver.at("/hook"))
    await page.goto(f"{live_app.url}/ui/deliveries?status=failed")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(2)
    await page.get_by_role("link", name="Retry all matching…").click()
    await expect(page.locator("#bulk-count")).to_contain_text("2 failing or failed deliveries")
    await page.get_by_role("button", name="Retry 2 deliveries").click()
    await expect(page.locator("#bulk-done")).to_contain_text("Queued 2 deliveries")

    async def both() -> bool:
        return len(receiver.at("/hook")) == before + 2

    await eventually(both)
    for received in receiver.at("/hook")[before:]:
        assert _verified(hook["secret"], received)["type"] == "task.cancelled"
    log = await client.get("/v1/audit", headers={"Authorization": f"Bearer {OPS_KEY}"})
    retries = [e for e in log.json()["items"] if e["action"].startswith("delivery.")]
    assert [(e["action"], e["actor"]) for e in retries] == [
        ("delivery.bulk_retry", "tenant:acme"),
        ("delivery.retry", "tenant:acme"),
    ]
    assert retries[0]["details"]["retried"] == 2


@pytest.mark.usefixtures("delivering")
async def test_rotate_test_read_only_and_the_audit_log(
    page: Page, live_app: LiveApp, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = (await client.post("/v1/webhooks", json={"url": receiver.url("/hook")})).json()
    await browser_sign_in(page, live_app.url, ACME_KEY, "/ui/endpoints")
    await page.get_by_role("link", name=hook["url"]).click()
    await page.get_by_role("button", name="Rotate secret").click()
    await expect(page.get_by_role("heading", name="Secret rotated")).to_be_visible()
    await expect(page.get_by_text("signed with both the old and the new secret")).to_be_visible()
    secret = await page.get_by_label("New secret").input_value()
    assert secret.startswith("whsec_")
    assert secret != hook["secret"]
    assert secret not in page.url

    await page.get_by_role("link", name="Back to the endpoint").click()
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.get_by_role("status")).to_contain_text("webhook.test event is queued")

    async def arrived() -> bool:
        return bool(receiver.at("/hook"))

    await eventually(arrived)
    [test] = receiver.at("/hook")
    # Signed with the new secret (and, in the grace period, the old one as well).
    assert _verified(secret, test)["type"] == "webhook.test"
    assert _verified(hook["secret"], test)["data"]["endpoint_id"] == hook["id"]
    await page.reload()
    await expect(page.locator("table.attempts")).to_contain_text("webhook.test")

    # A read-only operator: the buttons are disabled, and a forced POST is refused.
    reader = await page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        as_reader = await reader.new_page()
        await browser_sign_in(as_reader, live_app.url, READER_KEY, f"/ui/endpoints/{hook['id']}")
        for name in ("Disable", "Send test event", "Rotate secret"):
            await expect(as_reader.get_by_role("button", name=name)).to_be_disabled()
        await expect(as_reader.locator("#read-only")).to_contain_text("read-only")
        csrf = await as_reader.locator('input[name="csrf"]').first.input_value()
        forced = await as_reader.request.post(
            f"{live_app.url}/ui/endpoints/{hook['id']}/rotate", form={"csrf": csrf}
        )
        assert forced.status == 403
    finally:
        await reader.close()
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["secret"] == secret

    # The audit log shows each of these, the refusal too.
    operator = await page.context.browser.new_context()  # type: ignore[union-attr]
    try:
        as_ops = await operator.new_page()
        await browser_sign_in(as_ops, live_app.url, OPS_KEY, "/ui/audit")
        rows = as_ops.locator("table.audit tbody tr")
        await expect(rows.nth(0)).to_contain_text("webhook.rotate_secret")
        await expect(rows.nth(0)).to_contain_text("operator:reader")
        await expect(rows.nth(0)).to_contain_text("denied")
        await expect(rows.nth(1)).to_contain_text("webhook.test")
        await expect(rows.nth(2)).to_contain_text("webhook.rotate_secret")
        await expect(rows.nth(2)).to_contain_text("tenant:acme")
        await as_ops.get_by_label("Action").fill("webhook.test")
        await as_ops.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        assert re.search(r"action=webhook\.test", as_ops.url)
    finally:
        await operator.close()
