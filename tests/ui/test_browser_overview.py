"""The overview and the providers page in headless Chromium, against a live server, the
sandbox and a real `pollhook worker`: figures that move without a reload, and pausing and
resuming an instance by its buttons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
from tests.helpers import ACME_KEY, ADMIN_KEYS, DISCARD, OPS_KEY, READER_KEY
from tests.ui import browser_sign_in
from tests.ui.conftest import LiveApp

OPS = {"Authorization": f"Bearer {OPS_KEY}"}
# A worker's first activity row comes after its start and RECORD_INTERVAL_S, the page's
# next look a few seconds later.
LIVE_WITHIN_MS = 30_000


@pytest.fixture
def settings(database_url: str, sandbox_server: str, tmp_path: Path) -> Settings:  # noqa: F811
    """A tenant and the operators, and the providers at the sandbox as the worker runs them."""
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}],
        admin_keys=ADMIN_KEYS,
        providers=provider_settings(sandbox_server),
        engine=FAST_ENGINE,
        webhook_allow_networks=[DISCARD],
        data_dir=tmp_path / "data",
    )


async def test_the_overview_shows_the_workers_activity_without_a_reload(
    page: Page,
    live_app: LiveApp,
    client: httpx.AsyncClient,
    sandbox: Sandbox,  # noqa: F811
    start_worker: Callable[..., Worker],  # noqa: F811
) -> None:
    await browser_sign_in(page, live_app.url, OPS_KEY, "/ui")
    polls = page.locator('[data-tile="polls"]')
    await expect(polls).to_have_text("0.00")
    # Four charts, each drawn on a canvas.
    await expect(page.locator(".chart canvas")).to_have_count(4)
    await expect(page.locator('tr[data-instance="jimmy"]')).to_contain_text("ok")
    await page.evaluate("window.notReloaded = true")

    start_worker()
    for i in range(5):
        upstream = sandbox.task(provider="jimmy", duration_s=0.5 + i / 10)
        created = await client.post(
            "/v1/tasks", json={"provider": "jimmy", "external_id": upstream["id"]}
        )
        assert created.status_code == 201, created.text

    await expect(polls).not_to_have_text("0.00", timeout=LIVE_WITHIN_MS)
    await expect(page.locator('tr[data-instance="jimmy"] td').nth(1)).not_to_have_text(
        "0.00", timeout=LIVE_WITHIN_MS
    )
    await expect(page.locator('[data-tile="gap"]')).not_to_contain_text(
        "n/a", timeout=LIVE_WITHIN_MS
    )
    assert await page.evaluate("window.notReloaded === true")


async def test_an_operator_pauses_and_resumes_an_instance(
    page: Page, live_app: LiveApp, client: httpx.AsyncClient
) -> None:
    await browser_sign_in(page, live_app.url, OPS_KEY, "/ui/providers")
    minimax = page.locator('section[data-instance="minimax"]')
    await expect(minimax.locator("[data-paused]")).to_have_text("no")
    await minimax.get_by_label("Pause for").select_option(label="15 minutes")
    await minimax.get_by_role("button", name="Pause minimax").click()
    await expect(minimax.locator("[data-paused]")).to_contain_text("until")

    await minimax.get_by_role("button", name="Resume minimax").click()
    await expect(minimax.locator("[data-paused]")).to_have_text("no")
    await expect(minimax.get_by_role("button", name="Resume minimax")).to_have_count(0)

    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(log)] == [
        ("operator:ops", "provider.pause", "provider:minimax"),
        ("operator:ops", "provider.resume", "provider:minimax"),
    ]
    assert log[-1]["details"]["for_s"] == 900


async def test_a_read_only_operator_cannot_pause_from_the_page_or_by_posting(
    page: Page, live_app: LiveApp, client: httpx.AsyncClient
) -> None:
    await browser_sign_in(page, live_app.url, READER_KEY, "/ui/providers")
    minimax = page.locator('section[data-instance="minimax"]')
    button = minimax.get_by_role("button", name="Pause minimax")
    await expect(button).to_be_disabled()
    await expect(button).to_have_accessible_description(
        "Your key is read-only: it sees every instance but cannot pause or resume one."
    )
    # The page's own token, posted as the form would: the server refuses it all the same.
    status = await page.evaluate(
        """async () => {
            const form = document.querySelector('section[data-instance="minimax"] form.pause');
            const body = new URLSearchParams(new FormData(form));
            body.set("for_s", "900");
            const answer = await fetch(form.action, {method: "POST", body: body});
            return answer.status;
        }"""
    )
    assert status == 403
    await page.reload()
    await expect(minimax.locator("[data-paused]")).to_have_text("no")
    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert [(e["actor"], e["action"], e["result"]) for e in log] == [
        ("operator:reader", "provider.pause", "denied")
    ]
