"""DashScope tasks tracked to each of their ends by a real `pollhook worker` against the
sandbox's DashScope fake over real HTTP, with the typed result of those that succeed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import Sandbox, Worker
from tests.e2e.test_engine_e2e import all_terminal, eventually, register


async def test_dashscope_tasks_reach_every_terminal_status(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.http.patch("/_sandbox/config", json={"rates": {"dashscope": 0}}).raise_for_status()
    scripts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "success": ({"duration_s": 0.6}, {}),
        "partial": ({"duration_s": 0.3, "files": 2, "failed_files": 1}, {}),
        # DashScope says SUCCEEDED, but its only file failed.
        "all_files_failed": ({"duration_s": 0.3, "failed_files": 1}, {}),
        "failed": (
            {"duration_s": 0.3, "outcome": "failed", "error_name": "InternalError.Algo"},
            {},
        ),
        "canceled": ({"duration_s": 0.3, "outcome": "canceled"}, {}),
        "unknown": ({"duration_s": 0, "outcome": "expired"}, {}),
        "refused": ({"duration_s": 0, "outcome": "error"}, {}),
        "slow": ({"duration_s": 600}, {"deadline_s": 2}),
    }
    ids = {}
    for name, (script, extra) in scripts.items():
        upstream = sandbox.task(provider="dashscope", **script)
        # Registered in capitals: pollhook keeps DashScope's own lowercase form.
        ids[name] = await register(client, "dashscope", upstream["id"].upper(), **extra)
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="every task to end")

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "success": "succeeded",
        "partial": "succeeded",
        "all_files_failed": "failed",
        "failed": "failed",
        "canceled": "failed",
        "unknown": "expired",
        "refused": "failed",
        "slow": "timed_out",
    }
    assert all(t["external_id"] == t["external_id"].lower() for t in tasks.values())

    success = tasks["success"]["result"]
    assert success["kind"] == "dashscope"
    assert success["partial"] is False
    [file] = success["files"]
    assert file["status"] == "succeeded"
    assert file["transcription_url"].startswith(sandbox.base + "/_sandbox/files/dashscope/")
    assert file["transcription_url_expires_at"]
    async with httpx.AsyncClient() as http:
        transcript = (await http.get(file["transcription_url"])).json()
    assert transcript["transcripts"][0]["sentences"]

    partial = tasks["partial"]["result"]
    assert partial["partial"] is True
    assert [f["status"] for f in partial["files"]] == ["failed", "succeeded"]
    assert partial["files"][0]["code"] == "InvalidFile.DownloadFailed"

    assert tasks["all_files_failed"]["error"]["code"] == "InvalidFile.DownloadFailed"
    assert tasks["failed"]["error"]["code"] == "InternalError.Algo"
    assert tasks["canceled"]["error"]["code"] == "cancelled_upstream"
    assert tasks["unknown"]["error"]["code"] == "unknown_task"
    assert tasks["refused"]["error"]["code"] == "InvalidParameter"
    assert tasks["slow"]["error"]["code"] == "deadline_exceeded"
    stats = sandbox.http.get("/_sandbox/stats").json()["providers"]["dashscope"]
    assert stats["e2e-sandbox-key"]["requests"] >= len(scripts)
