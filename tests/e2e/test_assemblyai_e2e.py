"""AssemblyAI transcripts tracked to every end by a real `pollhook worker` polling the
sandbox's AssemblyAI fake over real HTTP, on the suite's Postgres."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.conftest import (
    SANDBOX_KEY,
    Sandbox,
    Worker,
)
from tests.e2e.test_engine_e2e import eventually, register
from tests.helpers import OPS


def keys_seen(sandbox: Sandbox) -> set[str]:
    """The keys the AssemblyAI fake was sent, as it counts them."""
    stats = sandbox.http.get("/_sandbox/stats").json()["providers"]["assemblyai"]
    return set(stats)


async def test_assemblyai_transcripts_reach_every_terminal_status(
    client: httpx.AsyncClient,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    download_error = "Download error, unable to access file at https://example.com/a.mp3"
    scripts: dict[str, dict[str, Any]] = {
        "completed": {"duration_s": 0.6},
        "late_text": {"duration_s": 0, "incomplete_queries": 2},
        "error": {"duration_s": 0.3, "outcome": "failed", "error_message": download_error},
        "deleted": {"duration_s": 0.3, "outcome": "expired"},
        "unknown": {"duration_s": 0, "outcome": "error"},
    }
    upstream = {name: sandbox.task(provider="assemblyai", **s) for name, s in scripts.items()}
    ids = {name: await register(client, "assemblyai", u["id"]) for name, u in upstream.items()}
    start_worker()

    async def tasks() -> dict[str, dict[str, Any]]:
        return {name: (await client.get(f"/v1/tasks/{i}")).json() for name, i in ids.items()}

    async def all_ended() -> bool:
        return all(
            t["status"] in ("succeeded", "failed", "expired") for t in (await tasks()).values()
        )

    await eventually(all_ended, within_s=30, what="every AssemblyAI task to end")
    ended = await tasks()
    assert {name: t["status"] for name, t in ended.items()} == {
        "completed": "succeeded",
        "late_text": "succeeded",
        "error": "failed",
        "deleted": "expired",
        "unknown": "failed",
    }
    # Two answers said completed without text; the third had it.
    assert sandbox.info("assemblyai", upstream["late_text"]["id"])["done_polls"] == 3
    for name in ("completed", "late_text"):
        result = ended[name]["result"]
        served = sandbox.http.get(
            f"/v2/transcript/{upstream[name]['id']}", headers={"Authorization": SANDBOX_KEY}
        ).json()
        assert result["kind"] == "assemblyai"
        assert result["text"] == served["text"]
        assert result["word_count"] == len(served["words"]) > 0
        assert result["language_code"] == "en_us"
        assert result["audio_duration"] == served["audio_duration"]
        assert result["audio_url"] == served["audio_url"]
        assert result["utterances"] is None
    assert ended["error"]["error"] == {"code": "failed", "message": download_error}
    assert ended["deleted"]["error"]["code"] == "deleted_upstream"
    assert ended["unknown"]["error"] == {
        "code": "http_400",
        "message": "Transcript lookup error, transcript id not found",
    }
    # The raw key, as AssemblyAI takes it: a scheme would have made it another key.
    assert keys_seen(sandbox) == {SANDBOX_KEY}


async def test_a_refused_key_pauses_the_instance_and_tasks_wait(
    client: httpx.AsyncClient,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    upstream = sandbox.task(provider="assemblyai", duration_s=0)
    task_id = await register(client, "assemblyai", upstream["id"])
    start_worker(extra_env={"POLLHOOK_PROVIDERS__ASSEMBLYAI__API_KEY": "bad-key"})

    async def auth_failed() -> bool:
        items = (await client.get("/v1/providers", headers=OPS)).json()["items"]
        instance = next(p for p in items if p["name"] == "assemblyai")
        return bool(instance["health"] == "auth_failed")

    await eventually(auth_failed, within_s=15, what="auth_failed")
    assert (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "pending"
    assert keys_seen(sandbox) == {"bad-key"}
    assert sandbox.info("assemblyai", upstream["id"])["polls"] == 0
