"""The dashboard's fixtures: the app with a session key of its own (`settings`, `ui`), a
live server on loopback (`live_app`) and a real Chromium (`browser`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.helpers import api_client, free_port

# Debian's chromium package: Playwright's own browser download cannot work on these
# machines (.ci/run installs the package).
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings, with a data_dir of the test's own for the session key file."""
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


@pytest_asyncio.fixture
async def ui(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that sends no key: what a browser sends, cookies and forms."""
    async with api_client(settings, engine, key=None) as http:
        yield http


@dataclass(frozen=True)
class LiveApp:
    url: str
    settings: Settings


@pytest_asyncio.fixture
async def live_app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[LiveApp]:
    """The app on a real port of 127.0.0.1, served by uvicorn in this event loop (so the
    test's own awaits let it answer), on the test database."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine=engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    try:
        yield LiveApp(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        await serving


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser binary. Without it the browser tests are skipped, except in CI (.ci/run
    sets CI), where they fail."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest_asyncio.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """Headless Chromium, one for the session (each test opens its own context: `page`)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium),
            # As root Chromium refuses to start with its sandbox.
            args=["--no-sandbox"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) and a page in it. A script error, or a console
    error (a refused Content-Security-Policy, a failing htmx request), fails the test; a
    page answered with an error status (a 404 page a test asked for) does not."""
    context = await browser.new_context()
    # A page that never shows what a test waits for fails within a browser test's budget.
    context.set_default_timeout(8000)
    errors: list[str] = []
    opened = await context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, errors
