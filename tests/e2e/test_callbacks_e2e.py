"""Provider callbacks end to end: the sandbox (a real process) posts each task's callback as
its provider would, signed, to a real `pollhook api`; a real `pollhook worker` polls the task
at once and takes the poll's answer. Forged and replayed callbacks change nothing.

Polling is stretched far past the test's span (the first poll a minute after registration),
so a task that ends within seconds was found through its callback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import SANDBOX_KEY, Sandbox, Worker
from tests.e2e.test_outages import Api, start_api  # noqa: F401  (a fixture)
from tests.helpers import ACME_KEY

TOKEN = "e2e-callback-token-0123456789abcdef"
# The first poll a minute after registration, the next ones 12 s or more apart.
STRETCHED = {
    "rate_limit_per_s": 0,
    "first_poll_delay_s": 1,
    "min_poll_interval_s": 0.2,
    "max_poll_interval_s": 0.5,
    "request_timeout_s": 3,
    "callback_poll_stretch": 60,
}


def instance_env(sandbox_base: str, signing_secret: str) -> dict[str, str]:
    instances = {
        "replicate": {**STRETCHED, "callback_secret": signing_secret},
        "assemblyai": {**STRETCHED, "callback_secret": TOKEN},
    }
    env = {}
    for name, fields in instances.items():
        fields = {"base_url": sandbox_base, "api_key": SANDBOX_KEY, **fields}
        for field, value in fields.items():
            env[f"POLLHOOK_PROVIDERS__{name.upper()}__{field.upper()}"] = str(value)
    return env


@pytest.fixture
def api(
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
    start_api: Callable[..., Api],  # noqa: F811
    database_url: str,
) -> Api:
    """`pollhook api` and `pollhook worker`, both with the two instances' callbacks on."""
    secret = sandbox.http.get("/_sandbox/config").json()["callback_secret"]
    env = instance_env(sandbox.base, secret)
    rates = {"rates": {"replicate": 0, "assemblyai": 0}}
    sandbox.http.patch("/_sandbox/config", json=rates).raise_for_status()
    started = start_api(database_url, env)
    start_worker(extra_env=env)
    return started


async def inbound_counts(api: Api) -> dict[tuple[str, str], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{api.base}/metrics")).text
    return {
        (s.labels["provider"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "pollhook_inbound_callbacks_total"
    }


async def test_callbacks_end_tasks_in_seconds_and_forgeries_change_nothing(
    sandbox: Sandbox, api: Api
) -> None:
    inbound = f"{api.base}/v1/inbound"
    scripts: dict[str, tuple[str, dict[str, Any], str]] = {
        "replicate_ok": ("replicate", {"callback_copies": 2}, f"{inbound}/replicate"),
        "replicate_failed": ("replicate", {"outcome": "failed"}, f"{inbound}/replicate"),
        "assemblyai_ok": ("assemblyai", {}, f"{inbound}/assemblyai?token={TOKEN}"),
        "assemblyai_error": (
            "assemblyai",
            {"outcome": "failed"},
            f"{inbound}/assemblyai?token={TOKEN}",
        ),
    }
    tasks: dict[str, str] = {}
    upstream: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=api.base, headers={"Authorization": f"Bearer {ACME_KEY}"}, timeout=10
    ) as client:
        for name, (provider, script, url) in scripts.items():
            created = sandbox.task(provider=provider, duration_s=1.0, callback_url=url, **script)
            upstream[name] = str(created["id"])
            registered = await client.post(
                "/v1/tasks", json={"provider": provider, "external_id": upstream[name]}
            )
            assert registered.status_code == 201, registered.text
            tasks[name] = registered.json()["id"]
        # A task that runs for an hour, and callbacks about it that prove nothing.
        quiet = str(sandbox.task(provider="replicate", duration_s=3600)["id"])
        quiet_task = (
            await client.post("/v1/tasks", json={"provider": "replicate", "external_id": quiet})
        ).json()["id"]
        body = json.dumps({"id": quiet, "status": "succeeded"})
        forged_key = Webhook("whsec_" + "Zm9yZ2VkIGtleSBvZiBhbm90aGVyIGFjY291bnQ=")
        when = datetime.now(UTC)
        headers = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": forged_key.sign("msg_forged", when, body),
        }
        assert (
            await client.post("/v1/inbound/replicate", content=body, headers=headers)
        ).status_code == 401
        wrong_token = await client.post(
            "/v1/inbound/assemblyai?token=guess", json={"transcript_id": quiet}
        )
        assert wrong_token.status_code == 401

        deadline = time.monotonic() + 20
        seen: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(seen) < len(tasks):
            for name, task_id in tasks.items():
                read = (await client.get(f"/v1/tasks/{task_id}")).json()
                if read["status"] not in ("pending", "queued", "processing"):
                    seen[name] = read
            await asyncio.sleep(0.2)
        assert set(seen) == set(tasks), {n: t for n, t in tasks.items() if n not in seen}
        quiet_read = (await client.get(f"/v1/tasks/{quiet_task}")).json()

    assert seen["replicate_ok"]["status"] == "succeeded"
    assert seen["replicate_ok"]["result"]["kind"] == "replicate"
    assert seen["replicate_failed"]["status"] == "failed"
    assert seen["assemblyai_ok"]["status"] == "succeeded"
    assert seen["assemblyai_ok"]["result"]["kind"] == "assemblyai"
    assert seen["assemblyai_error"]["status"] == "failed"
    for name, (provider, _, _) in scripts.items():
        info = sandbox.info(provider, upstream[name])
        assert info["callbacks_sent"] >= 1
        # Found by the poll the callback asked for, not by the stretched schedule.
        assert info["polls"] <= 2, (name, info["polls"])
    assert quiet_read["status"] == "pending"
    assert sandbox.info("replicate", quiet)["polls"] == 0

    counts = await inbound_counts(api)
    assert counts[("replicate", "hinted")] == 2
    assert counts[("assemblyai", "hinted")] == 2
    assert counts[("replicate", "replayed")] == 1  # the same message, sent twice
    assert counts[("replicate", "forged")] == 1
    assert counts[("assemblyai", "forged")] == 1
