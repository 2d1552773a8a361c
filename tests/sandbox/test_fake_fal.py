"""The sandbox's fal queue: its routes, answers and files, in-process on a fake clock; and the
fal adapter polling it to each end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from app.core.config import ProviderKind
from app.models import TaskStatus
from app.providers.base import PollContext, ProviderError, TaskError
from app.providers.fal import FalAdapter, FalResult
from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.fal import FAILED_ERROR_TYPE, fal_key
from app.sandbox.state import SandboxConfig
from tests.providers import make_harness
from tests.sandbox.support import FakeClock, parse_mp3

BASE = "http://sandbox.test"
KEY = {"Authorization": "Key test-key:secret"}
REQUEST_ID = "80e732af-660e-45cd-bd63-580e4f2a94cc"
TASK_ID = f"fal-ai/minimax-music/{REQUEST_ID}"
REQUESTS = f"/fal-ai/minimax-music/requests/{REQUEST_ID}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def http(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app(SandboxConfig(rates={"fal": 0}, seed=7), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/tasks", json={"provider": "fal", **script})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Key abc:def", "abc:def"),
        ("key  abc ", "abc"),
        ("Bearer abc", None),
        ("Key", None),
        ("", None),
        (None, None),
    ],
)
def test_fal_key(header: str | None, key: str | None) -> None:
    assert fal_key(header) == key


async def test_a_fresh_id_is_pollhooks_external_id(http: httpx.AsyncClient) -> None:
    created = await create(http, duration_s=3)

    assert created["provider"] == "fal"
    owner, app, request_id = created["id"].split("/")
    assert (owner, app) == ("fal-ai", "sandbox-tts")
    assert str(uuid.UUID(request_id)) == request_id
    assert FalAdapter().normalize_id(created["id"]) == created["id"]
    assert (await http.get(f"/_sandbox/tasks/fal/{created['id']}")).json()["id"] == created["id"]


async def test_a_request_goes_through_the_queue_to_its_audio(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(http, id=TASK_ID, duration_s=6)

    queued = await http.get(f"{REQUESTS}/status")
    clock.advance(2.5)
    running = await http.get(f"{REQUESTS}/status")
    early = await http.get(REQUESTS)
    clock.advance(3.5)
    done = await http.get(f"{REQUESTS}/status")
    result = await http.get(REQUESTS)

    assert queued.status_code == running.status_code == 202
    assert queued.json() == {
        "status": "IN_QUEUE",
        "queue_position": 1,
        "response_url": f"{BASE}{REQUESTS}",
        "status_url": f"{BASE}{REQUESTS}/status",
        "cancel_url": f"{BASE}{REQUESTS}/cancel",
        "logs": None,
    }
    assert running.json()["status"] == "IN_PROGRESS"
    assert "queue_position" not in running.json()
    assert early.status_code == 400
    assert done.status_code == 200
    assert done.json()["status"] == "COMPLETED"
    assert done.json()["metrics"] == {"inference_time": 4.0}
    assert "error" not in done.json()
    assert result.status_code == 200
    audio = result.json()["audio"]
    assert audio["content_type"] == "audio/mpeg"
    assert audio["file_size"] == 16_384
    url = urlsplit(audio["url"])
    assert url.path == f"/_sandbox/files/fal/fal-ai~minimax-music~{REQUEST_ID}.mp3"
    download = await http.get(audio["url"])
    assert download.status_code == 200
    assert len(download.content) == 16_384
    assert parse_mp3(download.content) > 0
    # The URL lives url_ttl_s from when the request completed, as a signed link does.
    expires = int(parse_qs(url.query)["expires"][0])
    assert expires == int(clock.wall + 32_400)
    clock.advance(32_401)
    assert (await http.get(audio["url"])).status_code == 403
    seen = (await http.get(f"/_sandbox/tasks/fal/{TASK_ID}")).json()
    assert (seen["status"], seen["polls"], seen["done_polls"], seen["retrieves"]) == (
        "COMPLETED",
        3,
        1,
        2,
    )


async def test_a_failed_request_says_why_on_its_status_and_result(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(http, id=TASK_ID, duration_s=0, outcome="failed", error_message="timed out")

    status = await http.get(f"{REQUESTS}/status")
    result = await http.get(REQUESTS)

    assert status.status_code == 200
    assert status.json()["status"] == "COMPLETED"
    assert status.json()["error"] == "timed out"
    assert status.json()["error_type"] == FAILED_ERROR_TYPE
    assert result.status_code == 504
    assert result.json() == {"detail": "timed out", "error_type": FAILED_ERROR_TYPE}
    assert result.headers["x-fal-error-type"] == FAILED_ERROR_TYPE
    files = await http.get(f"/_sandbox/files/fal/fal-ai~minimax-music~{REQUEST_ID}.mp3")
    assert files.status_code == 404


@pytest.mark.parametrize(
    ("error_code", "http_status", "error_type"),
    [(499, 499, "client_cancelled"), (503, 503, "runner_scheduling_failure")],
)
async def test_a_failed_requests_error_code_picks_its_error_type(
    http: httpx.AsyncClient, error_code: int, http_status: int, error_type: str
) -> None:
    await create(http, id=TASK_ID, duration_s=0, outcome="failed", error_code=error_code)

    status = (await http.get(f"{REQUESTS}/status")).json()
    result = await http.get(REQUESTS)

    assert (status["error"], status["error_type"]) == ("audio generation failed", error_type)
    assert result.status_code == http_status
    assert result.headers["x-fal-error-type"] == error_type


@pytest.mark.parametrize(("error_code", "http_status"), [(None, 422), (400, 400), (2013, 422)])
async def test_an_error_is_the_models_own_on_the_result(
    http: httpx.AsyncClient, error_code: int | None, http_status: int
) -> None:
    await create(http, id=TASK_ID, duration_s=0, outcome="error", error_code=error_code)

    status = await http.get(f"{REQUESTS}/status")
    result = await http.get(REQUESTS)

    assert status.status_code == 200
    assert status.json()["status"] == "COMPLETED"
    assert "error" not in status.json()
    assert result.status_code == http_status
    assert result.json() == {
        "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
    }


@pytest.mark.parametrize(
    "path",
    [
        f"/fal-ai/other-app/requests/{REQUEST_ID}/status",
        "/fal-ai/minimax-music/requests/0a1b2c3d-0000-4000-8000-000000000000/status",
        f"/fal-ai/other-app/requests/{REQUEST_ID}",
    ],
)
async def test_another_model_or_request_is_not_found(http: httpx.AsyncClient, path: str) -> None:
    await create(http, id=TASK_ID)

    response = await http.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Request not found"}


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Key bad-key"}, {"Authorization": "Bearer test-key"}, {}],
)
async def test_a_bad_key_is_refused(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    await create(http, id=TASK_ID)
    http.headers.pop("Authorization")

    for path in (f"{REQUESTS}/status", REQUESTS):
        response = await http.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid authentication credentials"}


async def test_over_the_rate_fal_answers_429(http: httpx.AsyncClient) -> None:
    await create(http, id=TASK_ID)
    (await http.patch("/_sandbox/config", json={"rates": {"fal": 1}})).raise_for_status()

    first = await http.get(f"{REQUESTS}/status")
    second = await http.get(REQUESTS)

    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json() == {"detail": "Too many requests"}
    stats = (await http.get("/_sandbox/stats")).json()["providers"]["fal"]["test-key:secret"]
    assert (stats["requests"], stats["rejected_rate_limited"]) == (2, 1)


async def test_faults_answer_in_fals_shapes(http: httpx.AsyncClient) -> None:
    await create(http, id=TASK_ID)
    fault = {"kind": "malformed_json", "provider": "fal", "count": 1}
    assert (await http.post("/_sandbox/faults", json=fault)).status_code == 201

    response = await http.get(f"{REQUESTS}/status")

    assert response.status_code == 200
    assert response.text.startswith('{"status": "IN_PROGRESS"')


async def test_the_default_rate_is_pollhooks_default(clock: FakeClock) -> None:
    app = create_sandbox_app(SandboxConfig(), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        rates = (await c.get("/_sandbox/config")).json()["rates"]

    assert rates["fal"] == 10.0


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"id": REQUEST_ID}, "a fal id must be <owner>/<app>/<request_id>"),
        ({"id": f"fal-ai/../{REQUEST_ID}"}, "a fal id must be"),
        ({"id": f"fal-ai/app/{REQUEST_ID.upper()}"}, "a fal id must be"),
        ({"id": 12345}, "a fal id must be"),
        ({"outcome": "expired"}, "not a fal task state"),
        ({"backup_url_only": True}, "backup_url_only: not a fal behaviour"),
        ({"message_in_msg": True}, "message_in_msg: not a fal behaviour"),
        ({"outcome": "failed", "error_code": 422}, "one of 504, 503, 502, 500, 499, 400"),
    ],
)
async def test_scripts_fal_cannot_play_are_refused(
    http: httpx.AsyncClient, script: dict[str, Any], message: str
) -> None:
    response = await http.post("/_sandbox/tasks", json={"provider": "fal", **script})

    assert response.status_code == 422
    assert message in response.text


# ---------------------------------------------------------------------------------------------
# The adapter against the fake


async def poll_to_the_end(
    http: httpx.AsyncClient, clock: FakeClock, task_id: str
) -> tuple[list[TaskStatus | None], PollContext, Any]:
    async def forward(request: httpx.Request) -> httpx.Response:
        response = await http.send(
            http.build_request(request.method, str(request.url), headers=request.headers)
        )
        await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    harness = make_harness(forward, kind=ProviderKind.FAL, base_url=BASE, api_key="k:s")
    adapter = FalAdapter()
    context = PollContext(task_id)
    seen: list[TaskStatus | None] = []
    for _ in range(4):
        try:
            outcome = await adapter.poll(harness.upstream, context)
        except ProviderError as exc:
            return seen, context, exc
        seen.append(outcome.status)
        if outcome.status is not None and outcome.status.is_terminal:
            return seen, context, outcome
        clock.advance(2.5)
    raise AssertionError(f"never ended: {seen}")


async def test_the_adapter_follows_a_request_to_its_result(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(http, id=TASK_ID, duration_s=6)

    seen, _, outcome = await poll_to_the_end(http, clock, TASK_ID)

    assert seen == [
        TaskStatus.QUEUED,
        TaskStatus.PROCESSING,
        TaskStatus.PROCESSING,
        TaskStatus.SUCCEEDED,
    ]
    assert isinstance(outcome.result, FalResult)
    [file] = outcome.result.files
    assert file.field == "audio"
    assert (await http.get(file.url)).status_code == 200


async def test_the_adapter_sees_each_failure_as_fal_tells_it(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    failed = (await create(http, duration_s=0, outcome="failed", error_message="timed out"))["id"]
    rejected = (await create(http, duration_s=0, outcome="error"))["id"]

    _, _, by_status = await poll_to_the_end(http, clock, failed)
    _, _, by_result = await poll_to_the_end(http, clock, rejected)

    assert by_status.status is TaskStatus.FAILED
    assert by_status.error == {"code": FAILED_ERROR_TYPE, "message": "timed out"}
    assert by_result.status is TaskStatus.FAILED
    assert by_result.error == {"code": "missing", "message": "body.prompt: field required"}


async def test_a_request_under_another_model_is_not_found_and_retried(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(http, id=TASK_ID)

    _, _, error = await poll_to_the_end(http, clock, f"fal-ai/other/{REQUEST_ID}")

    assert not isinstance(error, TaskError)
    assert error.code == "http_404"
