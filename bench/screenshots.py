"""Not a benchmark: the dashboard's screenshots in docs/screenshots/, made on the benchmarks'
throwaway setup so that they show a running system rather than empty pages.

Run from the repository root (needs Debian's chromium at /usr/bin/chromium):

    python -m bench.screenshots [--out docs/screenshots] [--chromium /usr/bin/chromium]

Setup: a throwaway embedded Postgres; the sandbox; `pollhook serve` pointed at it, with two
tenants and an operator; a local receiver behind one tenant's endpoint and nothing behind the
other's (127.0.0.1:9), so that its deliveries fail; tasks of both providers that succeed,
fail, or are still running; and a few operator actions, for the audit log. After the engine
has worked for a while, headless Chromium signs in as the operator and saves each page at a
laptop's width, and the overview at a phone's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, ViewportSize, async_playwright

from bench._support import (
    SANDBOX_KEY,
    Sandbox,
    free_port,
    http_ok,
    pollhook_env,
    prepare_database,
    spawn,
    stop_process,
    throwaway_postgres,
    wait_ready,
)
from bench.receiver import Receiver

TENANTS = {"acme": "acme-screenshots-key-0123456789", "globex": "globex-screenshots-key-01234567"}
OPERATOR_KEY = "ops-screenshots-key-0123456789"
# Nothing listens on the discard port: every delivery to it fails.
BROKEN_HOOK = "http://127.0.0.1:9/hooks/pollhook"
LAPTOP = ViewportSize(width=1280, height=860)
PHONE = ViewportSize(width=390, height=844)
# How long the engine works before the pictures: long enough for the overview's charts.
WARM_S = 75.0


async def _register(api: httpx.AsyncClient, sandbox: Sandbox, tenant: str, **script: Any) -> str:
    upstream = (await sandbox.http.post("/_sandbox/tasks", json=script)).json()["id"]
    response = await api.post(
        "/v1/tasks",
        json={"provider": script["provider"], "external_id": upstream},
        headers={"Authorization": f"Bearer {TENANTS[tenant]}"},
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def populate(api: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver) -> str:
    """Endpoints, tasks and operator actions; returns a task worth showing on its own page."""
    for tenant, url in (("acme", receiver.url("/hooks/acme")), ("globex", BROKEN_HOOK)):
        response = await api.post(
            "/v1/webhooks",
            json={"url": url, "description": f"{tenant}'s order service"},
            headers={"Authorization": f"Bearer {TENANTS[tenant]}"},
        )
        response.raise_for_status()
    registered = []
    for i in range(24):
        tenant = "acme" if i % 3 else "globex"
        provider = "minimax" if i % 2 else "jimmy"
        outcome = "failed" if i % 7 == 3 else "success"
        task = await _register(
            api, sandbox, tenant, provider=provider, duration_s=5 + 3 * i, outcome=outcome
        )
        registered.append((tenant, task))
    for _ in range(4):
        await _register(api, sandbox, "acme", provider="minimax", duration_s=3600)
    ops = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    for action in ("pause", "resume"):
        (await api.post(f"/v1/providers/jimmy/{action}", json={}, headers=ops)).raise_for_status()
    # The first of globex's: a success whose webhook keeps failing.
    return next(task for tenant, task in registered if tenant == "globex")


async def shoot(page: Page, base: str, path: str, out: Path, name: str) -> None:
    await page.goto(base + path)
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"  {out / name}.png", flush=True)


async def run(out: Path, logs: Path, chromium: Path) -> None:
    with throwaway_postgres("pollhook-screenshots-") as (server, _):
        await prepare_database(server)
        async with contextlib.AsyncExitStack() as stack:
            log = stack.enter_context((logs / "processes.log").open("w"))
            sandbox = await Sandbox.start(minimax_rate=20, jimmy_rate=10, log=log)
            stack.push_async_callback(sandbox.stop)
            receiver = await Receiver.start(log)
            stack.push_async_callback(receiver.stop)
            port = free_port()
            env = pollhook_env(
                server,
                sandbox=sandbox,
                providers={"jimmy": {"api_key": SANDBOX_KEY}},
                api_keys=",".join(f"{t}:{k}" for t, k in TENANTS.items()),
                admin_keys=f"ops:{OPERATOR_KEY}",
                webhook_allow_networks="127.0.0.0/8",
                data_dir=str(logs / "data"),
                log_level="WARNING",
            )
            serve = await spawn("app.cli", "serve", "--port", str(port), env=env, log=log)
            stack.push_async_callback(stop_process, serve, "pollhook serve")
            base = f"http://127.0.0.1:{port}"
            api = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30))
            await wait_ready(serve, "pollhook serve", lambda: http_ok(api, "/readyz"))
            task = await populate(api, sandbox, receiver)
            print(f"letting the engine work for {WARM_S:.0f} s ...", flush=True)
            await asyncio.sleep(WARM_S)
            await take_pictures(base, task, out, chromium)


async def take_pictures(base: str, task: str, out: Path, chromium: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox"]
        )
        try:
            context = await browser.new_context(viewport=LAPTOP)
            page = await context.new_page()
            await page.goto(base + "/ui/signin")
            await page.get_by_label("API key").fill(OPERATOR_KEY)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(base + "/ui")
            pages = [
                ("/ui", "overview"),
                ("/ui/tasks", "tasks"),
                (f"/ui/tasks/{task}", "task"),
                ("/ui/deliveries", "deliveries"),
                ("/ui/endpoints", "endpoints"),
                ("/ui/providers", "providers"),
                ("/ui/audit", "audit"),
            ]
            for path, name in pages:
                await shoot(page, base, path, out, name)
            await page.set_viewport_size(PHONE)
            await shoot(page, base, "/ui", out, "overview-phone")
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.screenshots",
        description="The dashboard's screenshots for docs/, of a system at work.",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = parser.parse_args(argv)
    if not args.chromium.exists():
        parser.error(f"no browser at {args.chromium}: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path("/tmp/pollhook-screenshots")
    logs.mkdir(exist_ok=True)
    asyncio.run(run(args.out, logs, args.chromium))
    return 0


if __name__ == "__main__":
    sys.exit(main())
