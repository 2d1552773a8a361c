"""fal queue requests tracked to each of their ends by a real `pollhook worker` against the
sandbox's fal over real HTTP, their typed results included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import (
    Sandbox,
    Worker,
)
from tests.e2e.test_engine_e2e import all_terminal, eventually, register


async def test_fal_requests_reach_every_end_with_their_results(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    # Unlimited at the sandbox, as pollhook's fal instance is here (rate_limit_per_s 0).
    sandbox.http.patch("/_sandbox/config", json={"rates": {"fal": 0}}).raise_for_status()
    scripts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "success": ({"duration_s": 0.9}, {}),
        "failed": ({"duration_s": 0.3, "outcome": "failed", "error_message": "timed out"}, {}),
        "rejected": ({"duration_s": 0.3, "outcome": "error"}, {}),
        "cancelled": (
            {"duration_s": 0.3, "outcome": "failed", "error_code": 499, "error_message": "x"},
            {},
        ),
        "slow": ({"duration_s": 600}, {"deadline_s": 2}),
    }
    ids, upstream_ids = {}, {}
    for name, (script, extra) in scripts.items():
        upstream = sandbox.task(provider="fal", **script)
        upstream_ids[name] = upstream["id"]
        ids[name] = await register(client, "fal", upstream["id"], **extra)
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="every request to end")

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "success": "succeeded",
        "failed": "failed",
        "rejected": "failed",
        "cancelled": "failed",
        "slow": "timed_out",
    }
    result = tasks["success"]["result"]
    model, _, request_id = upstream_ids["success"].rpartition("/")
    assert result["kind"] == "fal"
    assert (result["model"], result["request_id"]) == (model, request_id)
    [file] = result["files"]
    assert file["field"] == "audio"
    assert file["url"].startswith(f"{sandbox.base}/_sandbox/files/fal/")
    assert result["output"] == {"audio": {k: v for k, v in file.items() if k != "field"}}
    async with httpx.AsyncClient() as http:
        download = await http.get(file["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/mpeg"
    assert tasks["failed"]["error"] == {"code": "request_timeout", "message": "timed out"}
    assert tasks["rejected"]["error"] == {
        "code": "missing",
        "message": "body.prompt: field required",
    }
    assert tasks["cancelled"]["error"] == {"code": "client_cancelled", "message": "x"}
    assert tasks["slow"]["error"]["code"] == "deadline_exceeded"
    # One result GET per request that completed without an error on its status.
    seen = {name: sandbox.info("fal", upstream_ids[name]) for name in scripts}
    assert {name: s["retrieves"] for name, s in seen.items()} == {
        "success": 1,
        "failed": 0,
        "rejected": 1,
        "cancelled": 0,
        "slow": 0,
    }
    assert seen["slow"]["status"] in ("IN_QUEUE", "IN_PROGRESS")
