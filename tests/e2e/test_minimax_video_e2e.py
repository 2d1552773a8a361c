"""MiniMax video tasks tracked to each of their ends by a real `pollhook worker` against the
sandbox over real HTTP: the video query, then the File Retrieve it shares with T2A."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import (
    SANDBOX_KEY,
    Sandbox,
    Worker,
)
from tests.e2e.test_engine_e2e import all_terminal, eventually, register

INSTANCE = "minimax_video"


async def test_video_tasks_reach_every_end_with_their_typed_result(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    sandbox_server: str,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.http.patch("/_sandbox/config", json={"rates": {INSTANCE: 0}}).raise_for_status()
    scripts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "success": ({"duration_s": 0.9, "queued_status": "Queueing"}, {}),
        "late_file": ({"duration_s": 0.3, "file_not_ready_retrieves": 2}, {}),
        "failed": ({"duration_s": 0.3, "outcome": "failed"}, {}),
        "sensitive": (
            {"duration_s": 0, "outcome": "error", "error_code": 1027, "error_message": "nsfw"},
            {},
        ),
        "unknown": ({"duration_s": 0, "outcome": "error"}, {}),
        "slow": ({"duration_s": 600}, {"deadline_s": 2}),
    }
    ids: dict[str, str] = {}
    upstream: dict[str, dict[str, Any]] = {}
    for name, (script, extra) in scripts.items():
        upstream[name] = sandbox.task(provider=INSTANCE, status_case="title", **script)
        ids[name] = await register(client, INSTANCE, upstream[name]["id"], **extra)
    worker = start_worker()
    try:
        await eventually(lambda: all_terminal(engine), within_s=30, what="every task to end")
    except AssertionError as exc:
        raise AssertionError(worker.log()[-4000:]) from exc

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "success": "succeeded",
        "late_file": "succeeded",
        "failed": "failed",
        "sensitive": "failed",
        "unknown": "failed",
        "slow": "timed_out",
    }
    result = tasks["success"]["result"]
    file_id = upstream["success"]["file_id"]
    assert result["kind"] == "minimax_video"
    assert result["file_id"] == str(file_id)
    assert result["filename"] == "output.mp4"
    assert (result["video_width"], result["video_height"]) == (1280, 720)
    assert result["download_url"].startswith(
        f"{sandbox.base}/_sandbox/files/minimax_video/{file_id}.mp4?expires="
    )
    async with httpx.AsyncClient() as http:
        video = await http.get(result["download_url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    assert tasks["late_file"]["result"]["file_id"] == str(upstream["late_file"]["file_id"])
    assert tasks["failed"]["error"]["code"] == "failed"
    assert tasks["sensitive"]["error"] == {"code": "1027", "message": "nsfw"}
    assert tasks["unknown"]["error"]["code"] == "2013"
    assert tasks["slow"]["error"]["code"] == "deadline_exceeded"

    # The video query served the statuses; File Retrieve, shared with T2A, the files.
    late = sandbox.info(INSTANCE, upstream["late_file"]["id"])
    assert late["retrieves"] == 3  # two answered 2013, as scripted, then the file
    stats = sandbox.http.get("/_sandbox/stats").json()["providers"][INSTANCE]
    assert stats[SANDBOX_KEY]["requests"] >= len(scripts)
