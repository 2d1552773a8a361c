"""The dashboard in headless Chromium, against a live server, the sandbox and a real
`pollhook worker`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from app.core.config import Settings
from tests.e2e.conftest import (  # noqa: F401  (fixtures: the sandbox and the worker)
    FAST_ENGINE,
    Sandbox,
    Worker,
    provider_settings,
    sandbox,
    sandbox_server,
    start_worker,
)
from tests.helpers import ACME_KEY, DISCARD, OTHER_KEY
from tests.ui import browser_sign_in
from tests.ui.conftest import LiveApp


@pytest.fixture
def settings(database_url: str, sandbox_server: str, tmp_path: Path) -> Settings:  # noqa: F811
    """Two tenants, and the providers at the sandbox with the schedule the worker runs."""
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        providers=provider_settings(sandbox_server),
        engine=FAST_ENGINE,
        webhook_allow_networks=[DISCARD],
        data_dir=tmp_path / "data",
    )


async def register(client: httpx.AsyncClient, sandbox: Sandbox, **script: Any) -> str:  # noqa: F811
    upstream = sandbox.task(provider="jimmy", **script)
    response = await client.post(
        "/v1/tasks", json={"provider": "jimmy", "external_id": upstream["id"]}
    )
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


async def test_sign_in_list_open_a_task_and_sign_out(
    page: Page,
    live_app: LiveApp,
    client: httpx.AsyncClient,
    sandbox: Sandbox,  # noqa: F811
) -> None:
    task_id = await register(client, sandbox, duration_s=600)
    await browser_sign_in(page, live_app.url, ACME_KEY)
    await expect(page.get_by_text("Signed in as")).to_contain_text("acme")
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    await page.locator(f'a[href="/ui/tasks/{task_id}"]').click()
    await page.wait_for_url(f"{live_app.url}/ui/tasks/{task_id}")
    await expect(page.locator("[data-status]")).to_have_text("pending")
    await expect(page.locator(".timeline")).to_contain_text("registered")
    assert ACME_KEY not in await page.content()

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r".*/ui/signin$"))
    await page.goto(f"{live_app.url}/ui/tasks")
    assert "/ui/signin" in page.url


async def test_a_task_goes_from_pending_to_succeeded_without_a_reload(
    page: Page,
    live_app: LiveApp,
    client: httpx.AsyncClient,
    sandbox: Sandbox,  # noqa: F811
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    task_id = await register(client, sandbox, duration_s=1.0)
    await browser_sign_in(page, live_app.url, ACME_KEY, f"/ui/tasks/{task_id}")
    await expect(page.locator("[data-status]")).to_have_text("pending")
    # A mark in this document: a reload would lose it.
    await page.evaluate("window.notReloaded = true")
    start_worker()
    await expect(page.locator("[data-status]")).to_have_text("succeeded")
    await expect(page.locator(".timeline")).to_contain_text("task.succeeded")
    assert await page.evaluate("window.notReloaded === true")
    # Terminal: the page stops asking.
    await expect(page.locator("#live")).not_to_have_attribute("hx-trigger", re.compile("."))


async def test_another_tenants_task_is_not_found(
    page: Page,
    live_app: LiveApp,
    client: httpx.AsyncClient,
    sandbox: Sandbox,  # noqa: F811
) -> None:
    task_id = await register(client, sandbox, duration_s=600)
    await browser_sign_in(page, live_app.url, OTHER_KEY)
    response = await page.goto(f"{live_app.url}/ui/tasks/{task_id}")
    assert response is not None
    assert response.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(page.get_by_text("Signed in as")).to_contain_text("other")
