"""/docs works offline: every file its page loads is served by the app itself."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app
from app.sandbox.app import create_sandbox_app

# src/href attributes, and the OpenAPI document's `url: '...'` in the inline script.
LOADED = re.compile(r"""(?:src|href)="([^"]*)"|\burl:\s*'([^']*)'""")


@pytest_asyncio.fixture(params=["pollhook", "sandbox"])
async def docs_app(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[FastAPI]:
    if request.param == "pollhook":
        # No database is touched: the docs are static.
        yield create_app(settings)
    else:
        yield create_sandbox_app()


async def test_docs_page_loads_only_what_the_app_serves(docs_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=docs_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        html = page.text
        assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("://docs.test", "")
        urls = {a or b for a, b in LOADED.findall(html)}
        assert {u.rsplit("/", 1)[-1] for u in urls} == {
            "swagger-ui.css",
            "swagger-ui-bundle.js",
            "favicon.png",
            "openapi.json",
        }
        for url in urls:
            assert url.startswith("/"), url
            asset = await http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0, url
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io

        assert (await http.get("/redoc")).status_code == 404
        assert (await http.get("/docs/oauth2-redirect")).status_code == 404


async def test_docs_behind_a_path_prefix(settings: Settings) -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, root_path="/pollhook")
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as http:
        html = (await http.get("/docs")).text
    assert "/pollhook/docs/assets/swagger-ui-bundle.js" in html
    assert "url: '/pollhook/openapi.json'" in html


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt-get install chromium)")
def test_docs_render_in_a_browser_without_network(tmp_path: Path) -> None:
    """Swagger UI really runs from the served files: a browser whose every request off
    loopback goes to a dead proxy still lists the operations (the sandbox's, no database)."""
    assert CHROMIUM is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        dom = subprocess.run(
            [
                *(CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"),
                *("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"),
                f"--user-data-dir={tmp_path}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"http://127.0.0.1:{port}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    assert 'data-path="/_sandbox/tasks"' in dom, dom[-2000:]
