"""The sandbox's AssemblyAI fake over HTTP: its transcript query, its errors and the gate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.assemblyai import ANSWERS, AUTH_ERROR, NOT_FOUND
from app.sandbox.media import Mp3Layout, mp3_file
from app.sandbox.state import DEFAULT_RESULT_BYTES, SandboxConfig
from tests.sandbox.support import FakeClock

BASE = "http://sandbox.test"
QUERY = "/v2/transcript/"
KEY = {"Authorization": "aai-test-key"}
TASK_ID = "9ea68fd3-f953-42c1-9742-976c447fb463"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def http(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    config = SandboxConfig(rates={"assemblyai": 0}, seed=7)
    transport = httpx.ASGITransport(app=create_sandbox_app(config, clock=clock))
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/tasks", json={"provider": "assemblyai", **script})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def query(http: httpx.AsyncClient, task_id: str, **kwargs: Any) -> httpx.Response:
    return await http.get(QUERY + task_id, **kwargs)


async def test_a_transcript_is_queued_then_processing_then_completed(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, duration_s=9)
    task_id = created["id"]
    assert isinstance(task_id, str)
    assert len(task_id) == 36

    queued = (await query(http, task_id)).json()
    assert (queued["id"], queued["status"], queued["throttled"]) == (task_id, "queued", True)
    assert queued["text"] is None
    assert queued["words"] is None
    clock.advance(3)
    processing = (await query(http, task_id)).json()
    assert (processing["status"], processing["throttled"]) == ("processing", False)
    clock.advance(6)
    response = await query(http, task_id)

    assert response.status_code == 200
    done = response.json()
    assert done["status"] == "completed"
    assert "error" not in done
    assert done["language_code"] == "en_us"
    assert done["audio_duration"] == round(Mp3Layout.of(DEFAULT_RESULT_BYTES).duration_ms / 1000)
    assert done["words"]
    assert done["text"] == " ".join(w["text"] for w in done["words"])
    starts = [w["start"] for w in done["words"]]
    assert starts == sorted(starts)
    assert all(w["end"] > w["start"] for w in done["words"])
    seen = (await http.get(f"/_sandbox/tasks/assemblyai/{task_id}")).json()
    assert (seen["polls"], seen["done_polls"], seen["status"]) == (3, 1, "completed")


async def test_the_audio_url_serves_the_transcribed_audio_until_it_expires(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, duration_s=0, url_ttl_s=60)
    url = (await query(http, created["id"])).json()["audio_url"]
    parts = urlsplit(url)
    assert parts.path == f"/_sandbox/files/assemblyai/{created['id']}.mp3"

    served = await http.get(f"{parts.path}?{parts.query}")

    assert served.status_code == 200
    assert served.content == mp3_file(f"assemblyai:{created['id']}", DEFAULT_RESULT_BYTES).read()
    clock.advance(61)
    assert (await http.get(f"{parts.path}?{parts.query}")).status_code == 403


async def test_a_failed_transcript_says_error_with_its_reason(http: httpx.AsyncClient) -> None:
    message = "Download error, unable to access file at https://example.com/a.mp3"
    created = await create(http, duration_s=0, outcome="failed", error_message=message)

    body = (await query(http, created["id"])).json()

    assert (body["status"], body["error"], body["text"]) == ("error", message, None)


async def test_an_expired_transcript_answers_as_one_deleted_upstream(
    http: httpx.AsyncClient,
) -> None:
    created = await create(http, duration_s=0, outcome="expired")

    body = (await query(http, created["id"])).json()

    assert body["status"] == "completed"
    assert (body["audio_url"], body["text"], body["words"]) == (
        "http://deleted_by_user",
        "Deleted by user.",
        None,
    )


async def test_completed_without_text_for_the_scripted_queries(http: httpx.AsyncClient) -> None:
    created = await create(http, duration_s=0, incomplete_queries=1)

    first = (await query(http, created["id"])).json()
    second = (await query(http, created["id"])).json()

    assert (first["status"], first["text"], first["words"]) == ("completed", None, None)
    assert second["status"] == "completed"
    assert second["text"]


@pytest.mark.parametrize(
    ("script", "status", "message"),
    [
        ({}, 400, NOT_FOUND),
        ({"error_code": 404, "error_message": "Not found"}, 404, "Not found"),
        ({"error_code": 2013}, 400, NOT_FOUND),  # not an HTTP status: AssemblyAI's 400
    ],
)
async def test_a_scripted_error_answers_its_http_status(
    http: httpx.AsyncClient, script: dict[str, Any], status: int, message: str
) -> None:
    created = await create(http, duration_s=0, outcome="error", **script)

    response = await query(http, created["id"])

    assert response.status_code == status
    assert response.json() == {"error": message}


async def test_an_unknown_id_is_a_lookup_error(http: httpx.AsyncClient) -> None:
    response = await query(http, TASK_ID)

    assert response.status_code == 400
    assert response.json() == {"error": NOT_FOUND}


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "bad-key"}])
async def test_a_missing_or_wrong_key_is_refused(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    created = await create(http, duration_s=0)

    response = await query(http, created["id"], headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": AUTH_ERROR}
    assert (await http.get(f"/_sandbox/tasks/assemblyai/{created['id']}")).json()["polls"] == 0


async def test_the_rate_limit_answers_429_with_retry_after(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, duration_s=0)
    await http.patch("/_sandbox/config", json={"rates": {"assemblyai": 2}})

    answers = [await query(http, created["id"]) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json() == {"error": "Too Many Requests"}
    assert answers[2].headers["Retry-After"] == "1"
    clock.advance(1)
    assert (await query(http, created["id"])).status_code == 200
    stats = (await http.get("/_sandbox/stats")).json()["providers"]["assemblyai"]
    assert stats["aai-test-key"]["rejected_rate_limited"] == 1


async def test_the_documented_rate_is_the_default() -> None:
    app = create_sandbox_app(SandboxConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        config = (await client.get("/_sandbox/config")).json()

    assert config["rates"]["assemblyai"] == 66


async def test_faults_answer_in_assemblyais_shapes(http: httpx.AsyncClient) -> None:
    created = await create(http, duration_s=0)
    fault = {"provider": "assemblyai", "count": 1}
    await http.post("/_sandbox/faults", json={"kind": "malformed_json", **fault})
    await http.post("/_sandbox/faults", json={"kind": "wrong_types", **fault})

    cut = await query(http, created["id"])
    mistyped = await query(http, created["id"])

    assert cut.text == ANSWERS.malformed_json
    assert mistyped.json() in [dict(body) for body in ANSWERS.wrong_types]
    assert (await query(http, created["id"])).json()["status"] == "completed"


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ({"subtitles": True}, "subtitles"),
        ({"model": "clone"}, "model"),
        ({"message_in_msg": True}, "message_in_msg"),
        ({"queued_status": "Queueing"}, "queued_status"),
        ({"id": "9EA68FD3-f953-42c1-9742-976c447fb463"}, "lowercase"),
        ({"id": "a--b"}, "hyphens"),
    ],
)
async def test_scripts_that_are_not_assemblyai_behaviour_are_refused(
    http: httpx.AsyncClient, script: dict[str, Any], problem: str
) -> None:
    response = await http.post("/_sandbox/tasks", json={"provider": "assemblyai", **script})

    assert response.status_code == 422
    assert problem in response.text


async def test_an_explicit_id_and_a_batch(http: httpx.AsyncClient) -> None:
    created = await create(http, id=TASK_ID, duration_s=0)
    batch = await http.post(
        "/_sandbox/tasks/batch", json={"provider": "assemblyai", "count": 3, "duration_s": 0}
    )

    assert created["id"] == TASK_ID
    assert (await query(http, TASK_ID)).json()["id"] == TASK_ID
    ids = batch.json()["ids"]
    assert len(set(ids)) == 3
    for task_id in ids:
        assert (await query(http, task_id)).json()["status"] == "completed"
