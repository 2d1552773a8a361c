"""ElevenLabs dubbing tasks tracked to every end by a real `pollhook worker` against the
sandbox over real HTTP: the `elevenlabs` instance, pointed at the sandbox."""

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


async def test_elevenlabs_dubs_reach_every_end_with_their_typed_result(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    sandbox.http.patch("/_sandbox/config", json={"rates": {"elevenlabs": 0}}).raise_for_status()
    scripts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "dubbed": ({"duration_s": 0.6}, {}),
        "late_languages": ({"duration_s": 0.3, "incomplete_queries": 2}, {}),
        "failed": ({"duration_s": 0.3, "outcome": "failed", "error_message": "no speech"}, {}),
        "unknown": ({"duration_s": 0, "outcome": "error"}, {}),
        "slow": ({"duration_s": 600}, {"deadline_s": 2}),
    }
    ids: dict[str, str] = {}
    upstream: dict[str, str] = {}
    for name, (script, extra) in scripts.items():
        upstream[name] = sandbox.task(provider="elevenlabs", **script)["id"]
        ids[name] = await register(client, "elevenlabs", upstream[name], **extra)
    start_worker()
    await eventually(lambda: all_terminal(engine), within_s=30, what="every dub to end")

    tasks = {name: (await client.get(f"/v1/tasks/{tid}")).json() for name, tid in ids.items()}
    assert {name: t["status"] for name, t in tasks.items()} == {
        "dubbed": "succeeded",
        "late_languages": "succeeded",
        "failed": "failed",
        "unknown": "failed",
        "slow": "timed_out",
    }
    result = tasks["dubbed"]["result"]
    dub = f"{sandbox.base}/v1/dubbing/{upstream['dubbed']}"
    assert result == {
        "kind": "elevenlabs_dubbing",
        "dubbing_id": upstream["dubbed"],
        "name": f"sandbox dub {upstream['dubbed']}",
        "source_language": "en",
        "media_content_type": "audio/mpeg",
        "media_duration_s": 1.008,
        "languages": [
            {
                "language": lang,
                "audio_url": f"{dub}/audio/{lang}",
                "transcript_url": f"{dub}/transcript/{lang}?format_type=srt",
            }
            for lang in ("es", "fr")
        ],
    }
    assert [lang["language"] for lang in tasks["late_languages"]["result"]["languages"]] == [
        "es",
        "fr",
    ]
    # The listed URLs are the dub's files, with the instance's key.
    async with httpx.AsyncClient(headers={"xi-api-key": SANDBOX_KEY}) as http:
        for lang in result["languages"]:
            audio = await http.get(lang["audio_url"])
            assert audio.status_code == 200
            assert audio.headers["content-type"] == "audio/mpeg"
            assert (await http.get(lang["transcript_url"])).text.startswith("1\n")
    assert tasks["failed"]["error"] == {"code": "failed", "message": "no speech"}
    assert tasks["unknown"]["error"]["code"] == "dubbing_not_found"
    assert tasks["slow"]["error"]["code"] == "deadline_exceeded"
    # Dubbed without languages twice, retried as not ready, then dubbed with them.
    assert sandbox.info("elevenlabs", upstream["late_languages"])["done_polls"] == 3
