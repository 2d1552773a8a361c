"""Replicate predictions tracked to each of their ends by a real `pollhook worker` against
the sandbox's Replicate over real HTTP, their typed results read back through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import (
    Sandbox,
    Worker,
)
from tests.e2e.test_engine_e2e import all_terminal, eventually, register


async def test_replicate_predictions_reach_every_end(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    scripts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "one_file": ({"duration_s": 0.6}, {}),
        "file_list": ({"duration_s": 0.3, "result_list_length": 2}, {}),
        "late_output": ({"duration_s": 0, "incomplete_queries": 1}, {}),
        "failed": ({"duration_s": 0.3, "outcome": "failed", "error_message": "CUDA OOM"}, {}),
        "canceled": ({"duration_s": 0.3, "outcome": "canceled"}, {}),
        "aborted": ({"duration_s": 0.3, "outcome": "expired"}, {}),
        # Its output is deleted long before the worker is up to read it.
        "removed": ({"duration_s": 0, "url_ttl_s": 0.05}, {}),
        "unknown": ({"duration_s": 0, "outcome": "error"}, {}),
        "slow": ({"duration_s": 600}, {"deadline_s": 2}),
    }
    ids = {}
    for name, (script, extra) in scripts.items():
        upstream = sandbox.task(provider="replicate", **script)
        ids[name] = await register(client, "replicate", upstream["id"], **extra)
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="every prediction to end")

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "one_file": "succeeded",
        "file_list": "succeeded",
        "late_output": "succeeded",
        "failed": "failed",
        "canceled": "failed",
        "aborted": "expired",
        "removed": "expired",
        "unknown": "failed",
        "slow": "timed_out",
    }
    one, listed = tasks["one_file"]["result"], tasks["file_list"]["result"]
    assert one["kind"] == listed["kind"] == "replicate"
    assert one["output_urls"] == [one["output"]]
    assert listed["output_urls"] == listed["output"]
    assert len(listed["output_urls"]) == 2
    assert (one["model"], one["completed_at"] is not None) == ("sandbox/text-to-speech", True)
    assert one["predict_time_s"] == pytest.approx(0.4, abs=0.01)
    async with httpx.AsyncClient() as http:
        for url in one["output_urls"] + listed["output_urls"]:
            assert urlsplit(url).path.startswith("/_sandbox/files/replicate/")
            download = await http.get(url)
            assert (download.status_code, download.headers["content-type"]) == (200, "audio/mpeg")
    assert tasks["late_output"]["result"]["output_urls"]
    assert tasks["failed"]["error"] == {"code": "failed", "message": "CUDA OOM"}
    errors = {name: tasks[name]["error"]["code"] for name in ("canceled", "aborted", "removed")}
    assert errors == {
        "canceled": "cancelled_upstream",
        "aborted": "aborted",
        "removed": "data_removed",
    }
    assert tasks["unknown"]["error"]["code"] == "http_404"
    assert tasks["slow"]["error"]["code"] == "deadline_exceeded"
    late = sandbox.info("replicate", tasks["late_output"]["external_id"])
    assert late["done_polls"] == 2  # the first answer said succeeded without output
