"""The sandbox's ElevenLabs dubbing fake over HTTP: Get dubbing, the keyed audio and
transcript routes, its errors, rate limit and faults, and its control-API scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.elevenlabs import ANSWERS, audio, transcript
from app.sandbox.state import Sandbox, SandboxConfig
from tests.sandbox.support import FakeClock, parse_mp3

BASE = "http://sandbox.test"
KEY = {"xi-api-key": "test-key"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox_app(clock: FakeClock) -> FastAPI:
    return create_sandbox_app(SandboxConfig(rates={"elevenlabs": 0}, seed=7), clock=clock)


@pytest_asyncio.fixture
async def http(sandbox_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sandbox_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/tasks", json={"provider": "elevenlabs", **script})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def get(http: httpx.AsyncClient, dubbing_id: str) -> httpx.Response:
    return await http.get(f"/v1/dubbing/{dubbing_id}")


async def test_a_dub_queues_dubs_and_ends_dubbed(http: httpx.AsyncClient, clock: FakeClock) -> None:
    task = await create(http, duration_s=9)
    dubbing_id = task["id"]
    assert len(dubbing_id) == 20
    assert dubbing_id.isalnum()

    queued = (await get(http, dubbing_id)).json()
    clock.advance(3)
    dubbing = (await get(http, dubbing_id)).json()
    clock.advance(6)
    response = await get(http, dubbing_id)

    assert queued["status"] == "queued"
    assert queued["source_language"] is None
    assert dubbing["status"] == "dubbing"
    assert response.status_code == 200
    assert response.json() == {
        "dubbing_id": dubbing_id,
        "name": f"sandbox dub {dubbing_id}",
        "status": "dubbed",
        "source_language": "en",
        "target_languages": ["es", "fr"],
        "editable": False,
        "created_at": queued["created_at"],
        "media_metadata": {"content_type": "audio/mpeg", "duration": 1.008},
        "error": None,
    }
    seen = (await http.get(f"/_sandbox/tasks/elevenlabs/{dubbing_id}")).json()
    assert seen["polls"] == 3
    assert seen["status"] == "dubbed"
    # Jimmy's script fields say nothing of a dub.
    assert seen["model"] is None
    assert seen["code_as_string"] is None


async def test_the_dub_is_behind_the_keyed_routes_once_dubbed(
    http: httpx.AsyncClient, clock: FakeClock, sandbox_app: FastAPI
) -> None:
    dubbing_id = (await create(http, duration_s=5, result_bytes=32_768))["id"]
    audio_path = f"/v1/dubbing/{dubbing_id}/audio/es"
    transcript_path = f"/v1/dubbing/{dubbing_id}/transcript/fr"

    early = await http.get(audio_path)
    clock.advance(5)
    es = await http.get(audio_path)
    fr = await http.get(f"/v1/dubbing/{dubbing_id}/audio/fr")
    srt = await http.get(transcript_path, params={"format_type": "srt"})
    keyless = await http.get(audio_path, headers={"xi-api-key": ""})
    other = await http.get(f"/v1/dubbing/{dubbing_id}/audio/de")

    assert early.status_code == 425
    assert early.json()["detail"]["status"] == "dubbing_not_ready"
    assert es.status_code == 200
    assert es.headers["content-type"] == "audio/mpeg"
    assert len(es.content) == int(es.headers["content-length"]) == 32_768
    assert parse_mp3(es.content) > 0
    assert es.content != fr.content
    sandbox: Sandbox = sandbox_app.state.sandbox
    task = sandbox.tasks.get("elevenlabs", dubbing_id)
    assert task is not None
    assert es.content == audio(task, "es").read()
    assert srt.status_code == 200
    assert srt.text.startswith("1\n00:00:00,000 --> ")
    assert srt.content == transcript(task, "fr")
    assert keyless.status_code == 401
    assert keyless.json() == {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
    assert other.status_code == 404


async def test_failed_dub_says_why_and_has_no_files(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    dubbing_id = (await create(http, duration_s=1, outcome="failed", error_message="no speech"))[
        "id"
    ]
    clock.advance(1)

    body = (await get(http, dubbing_id)).json()
    files = await http.get(f"/v1/dubbing/{dubbing_id}/audio/es")

    assert body["status"] == "failed"
    assert body["error"] == "no speech"
    assert files.status_code == 425


@pytest.mark.parametrize(
    ("script", "status", "word"),
    [
        ({}, 404, "dubbing_not_found"),
        ({"error_code": 401}, 401, "invalid_api_key"),
        ({"error_code": 500, "error_message": "boom"}, 500, "error"),
    ],
)
async def test_scripted_errors_answer_with_their_http_status(
    http: httpx.AsyncClient, script: dict[str, Any], status: int, word: str
) -> None:
    dubbing_id = (await create(http, duration_s=0, outcome="error", **script))["id"]

    response = await get(http, dubbing_id)

    assert response.status_code == status
    assert response.json()["detail"]["status"] == word


async def test_a_scripted_422_is_a_validation_error(http: httpx.AsyncClient) -> None:
    dubbing_id = (await create(http, duration_s=0, outcome="error", error_code=422))["id"]

    response = await get(http, dubbing_id)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "dubbing_id"]


async def test_unknown_dubs_and_bad_keys(http: httpx.AsyncClient) -> None:
    unknown = await get(http, "nosuchdub")
    bad = await http.get("/v1/dubbing/nosuchdub", headers={"xi-api-key": "bad-key"})

    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": {"status": "dubbing_not_found", "message": "Dubbing not found"}
    }
    assert bad.status_code == 401
    assert bad.json()["detail"]["status"] == "invalid_api_key"


async def test_dubbed_without_languages_for_scripted_queries(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    dubbing_id = (await create(http, duration_s=0, incomplete_queries=1))["id"]

    first = (await get(http, dubbing_id)).json()
    second = (await get(http, dubbing_id)).json()

    assert (first["status"], first["target_languages"]) == ("dubbed", [])
    assert (second["status"], second["target_languages"]) == ("dubbed", ["es", "fr"])


async def test_its_rate_limit_answer(clock: FakeClock) -> None:
    app = create_sandbox_app(SandboxConfig(seed=7), clock=clock)  # the default 2/s
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as http:
        dubbing_id = (await create(http))["id"]
        answers = [await get(http, dubbing_id) for _ in range(3)]
        stats = (await http.get("/_sandbox/stats")).json()["providers"]["elevenlabs"]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["detail"]["status"] == "too_many_concurrent_requests"
    assert "retry-after" not in answers[2].headers
    assert stats["test-key"]["rejected_rate_limited"] == 1


@pytest.mark.parametrize("kind", ["malformed_json", "wrong_types", "http_500", "rate_limit"])
async def test_faults(http: httpx.AsyncClient, kind: str) -> None:
    dubbing_id = (await create(http))["id"]
    fault = {"kind": kind, "provider": "elevenlabs", "count": 1}
    assert (await http.post("/_sandbox/faults", json=fault)).status_code == 201

    faulty = await get(http, dubbing_id)
    normal = await get(http, dubbing_id)

    assert normal.status_code == 200
    if kind == "malformed_json":
        assert faulty.text == ANSWERS.malformed_json
    elif kind == "wrong_types":
        assert faulty.status_code == 200
        assert faulty.json() in ANSWERS.wrong_types
    elif kind == "http_500":
        assert faulty.status_code == 500
    else:
        assert faulty.status_code == 429


async def test_the_sandbox_file_route_serves_the_audio_with_an_expiry(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    task = await create(http, duration_s=0)
    dubbing_id = task["id"]
    expires = int(task["ready_at"] + 60)

    served = await http.get(f"/_sandbox/files/elevenlabs/{dubbing_id}.es.mp3?expires={expires}")
    unexpiring = await http.get(f"/_sandbox/files/elevenlabs/{dubbing_id}.es.mp3")
    other = await http.get(f"/_sandbox/files/elevenlabs/{dubbing_id}.de.mp3?expires={expires}")

    assert served.status_code == 200
    assert served.content == (await http.get(f"/v1/dubbing/{dubbing_id}/audio/es")).content
    assert unexpiring.status_code == 403
    assert other.status_code == 404


@pytest.mark.parametrize(
    ("script", "names"),
    [
        ({"outcome": "expired"}, "expired"),
        ({"queued_status": "Queueing"}, "queued_status"),
        ({"message_in_msg": True}, "message_in_msg"),
        ({"model": "clone", "subtitles": True}, "model, subtitles"),
    ],
)
async def test_scripts_that_are_not_elevenlabs_behaviours_are_refused(
    http: httpx.AsyncClient, script: dict[str, Any], names: str
) -> None:
    response = await http.post("/_sandbox/tasks", json={"provider": "elevenlabs", **script})

    assert response.status_code == 422
    assert names in response.text
