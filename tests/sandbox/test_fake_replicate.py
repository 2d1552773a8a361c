"""The sandbox's Replicate: `GET /v1/predictions/{id}` through every scripted end, its
errors, its rate limit and faults, its output files, and pollhook's adapter reading each
answer it gives (in process, on a fake clock)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.core.config import ProviderKind
from app.models import TaskStatus
from app.providers.base import PollContext, PollOutcome, ProviderError, TaskError
from app.providers.replicate import ReplicateAdapter, ReplicateResult
from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.replicate import MODEL, VERSION
from app.sandbox.media import mp3_file
from app.sandbox.state import SandboxConfig
from tests.providers import make_harness
from tests.sandbox.support import FakeClock

BASE = "http://sandbox.test"
QUERY = "/v1/predictions/"
KEY = {"Authorization": "Bearer test-key"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def http(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app(SandboxConfig(seed=7, rates={"replicate": 0}), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> str:
    response = await http.post("/_sandbox/tasks", json={"provider": "replicate", **script})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def query(http: httpx.AsyncClient, task_id: str) -> httpx.Response:
    return await http.get(QUERY + task_id)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_prediction_starts_processes_and_succeeds_with_one_file(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created_at = clock.wall
    task_id = await create(http, duration_s=9)
    assert re.fullmatch(r"[a-z0-9]{26}", task_id)

    statuses = []
    for _ in range(3):  # at 0 s, 3 s and 6 s of 9
        body = (await query(http, task_id)).json()
        statuses.append((body["status"], body["started_at"], body["completed_at"], body["output"]))
        clock.advance(3)
    assert statuses == [
        ("starting", None, None, None),
        ("processing", iso(created_at + 3), None, None),
        ("processing", iso(created_at + 3), None, None),
    ]

    response = await query(http, task_id)
    assert response.status_code == 200
    url = f"{BASE}/_sandbox/files/replicate/{task_id}.mp3?expires={int(created_at + 9 + 3600)}"
    assert response.json() == {
        "id": task_id,
        "model": MODEL,
        "version": VERSION,
        "input": {"text": "pollhook sandbox"},
        "logs": "",
        "output": url,
        "data_removed": False,
        "error": None,
        "status": "succeeded",
        "created_at": iso(created_at),
        "started_at": iso(created_at + 3),
        "completed_at": iso(created_at + 9),
        "source": "api",
        "urls": {
            "get": f"{BASE}/v1/predictions/{task_id}",
            "cancel": f"{BASE}/v1/predictions/{task_id}/cancel",
        },
        "metrics": {"predict_time": 6.0, "total_time": 9.0},
    }
    download = await http.get(url)
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/mpeg"
    assert download.content == mp3_file(f"replicate:{task_id}", 16_384).read()
    seen = (await http.get(f"/_sandbox/tasks/replicate/{task_id}")).json()
    assert (seen["polls"], seen["done_polls"], seen["downloads"]) == (4, 1, 1)
    assert (seen["status"], seen["result_list_length"]) == ("succeeded", None)


async def test_an_output_list_names_distinct_files(http: httpx.AsyncClient) -> None:
    task_id = await create(http, duration_s=0, result_list_length=3)

    output = (await query(http, task_id)).json()["output"]

    assert [url.split("?")[0] for url in output] == [
        f"{BASE}/_sandbox/files/replicate/{task_id}-{n}.mp3" for n in range(3)
    ]
    files = [(await http.get(url)).content for url in output]
    assert len(set(files)) == 3
    assert files[1] == mp3_file(f"replicate:{task_id}-1", 16_384).read()
    assert (await http.get(f"{BASE}/_sandbox/files/replicate/{task_id}-3.mp3")).status_code == 404


@pytest.mark.parametrize(
    ("script", "status", "error", "started"),
    [
        (
            {"outcome": "failed", "error_message": "CUDA out of memory"},
            "failed",
            "CUDA out of memory",
            True,
        ),
        ({"outcome": "failed"}, "failed", "audio generation failed", True),
        ({"outcome": "canceled"}, "canceled", None, True),
        ({"outcome": "expired"}, "aborted", None, False),
    ],
)
async def test_predictions_that_end_without_output(
    http: httpx.AsyncClient,
    clock: FakeClock,
    script: dict[str, Any],
    status: str,
    error: str | None,
    started: bool,
) -> None:
    task_id = await create(http, duration_s=6, **script)
    clock.advance(3)
    running = (await query(http, task_id)).json()
    # An aborted prediction never left `starting`: its deadline passed before it could run.
    assert running["status"] == ("processing" if started else "starting")
    clock.advance(3)

    body = (await query(http, task_id)).json()

    assert (body["status"], body["error"], body["output"]) == (status, error, None)
    assert (body["started_at"] is not None) is started
    assert body["completed_at"] is not None
    assert (await http.get(f"/_sandbox/files/replicate/{task_id}.mp3")).status_code == 404


async def test_output_and_files_are_deleted_an_hour_after_the_end(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    task_id = await create(http, duration_s=0)
    url = (await query(http, task_id)).json()["output"]
    clock.advance(3600)
    assert (await http.get(url)).status_code == 200
    assert (await query(http, task_id)).json()["output"] == url
    clock.advance(0.5)

    body = (await query(http, task_id)).json()

    assert (body["status"], body["output"], body["data_removed"]) == ("succeeded", None, True)
    assert (body["input"], body["logs"]) == ({}, None)
    assert (await http.get(url)).status_code == 403


async def test_a_shorter_url_ttl_deletes_sooner(http: httpx.AsyncClient, clock: FakeClock) -> None:
    task_id = await create(http, duration_s=0, url_ttl_s=10)
    assert (await query(http, task_id)).json()["output"].endswith(f"expires={int(clock.wall) + 10}")
    clock.advance(10.5)

    assert (await query(http, task_id)).json()["data_removed"] is True


async def test_succeeded_without_output_for_scripted_queries(http: httpx.AsyncClient) -> None:
    task_id = await create(http, duration_s=0, incomplete_queries=2)

    bodies = [(await query(http, task_id)).json() for _ in range(3)]

    assert [(b["status"], b["data_removed"]) for b in bodies] == [("succeeded", False)] * 3
    assert [b["output"] is None for b in bodies] == [True, True, False]


@pytest.mark.parametrize(
    ("script", "status", "detail"),
    [
        ({}, 404, "Not found."),
        ({"error_code": 422, "error_message": "invalid version"}, 422, "invalid version"),
        ({"error_code": 500}, 500, "Not found."),
    ],
)
async def test_scripted_errors_are_problem_details(
    http: httpx.AsyncClient, script: dict[str, Any], status: int, detail: str
) -> None:
    task_id = await create(http, duration_s=0, outcome="error", **script)

    response = await query(http, task_id)

    assert response.status_code == status
    assert response.json()["status"] == status
    assert response.json()["detail"] == detail
    assert isinstance(response.json()["title"], str)


async def test_unknown_predictions_and_keys(http: httpx.AsyncClient) -> None:
    task_id = await create(http)
    unknown = await query(http, "gm3qorzdhgbfurvjtvhg6dckhu")
    assert unknown.status_code == 404
    assert unknown.json() == {"title": "Not Found", "detail": "Not found.", "status": 404}

    refused = {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    for header in ("Bearer bad-key", "Bearer", "test-key", "", None):
        request = http.build_request("GET", QUERY + task_id)
        del request.headers["authorization"]
        if header is not None:
            request.headers["authorization"] = header
        response = await http.send(request)
        assert (response.status_code, response.json()) == (401, refused)
    # The legacy scheme is still accepted.
    legacy = await http.get(QUERY + task_id, headers={"Authorization": "Token test-key"})
    assert legacy.status_code == 200


async def test_its_rate_limit_answer(http: httpx.AsyncClient) -> None:
    assert (await http.get("/_sandbox/config")).json()["rates"]["replicate"] == 0
    await http.patch("/_sandbox/config", json={"rates": {"replicate": 1}})
    task_id = await create(http)

    first, second = await query(http, task_id), await query(http, task_id)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert second.json() == {"detail": "Request was throttled. Your rate limit resets in ~1s."}
    stats = (await http.get("/_sandbox/stats")).json()["providers"]["replicate"]["test-key"]
    assert (stats["requests"], stats["rejected_rate_limited"]) == (2, 1)


def test_its_documented_limit_is_the_default() -> None:
    app = create_sandbox_app(SandboxConfig())
    assert app.state.sandbox.rates["replicate"] == 50.0


@pytest.mark.parametrize("kind", ["malformed_json", "wrong_types", "rate_limit", "http_503"])
async def test_faults_answer_as_replicate_would_break(http: httpx.AsyncClient, kind: str) -> None:
    task_id = await create(http)
    await http.post("/_sandbox/faults", json={"kind": kind, "provider": "replicate", "count": 1})

    response = await query(http, task_id)

    assert response.status_code == {"rate_limit": 429, "http_503": 503}.get(kind, 200)
    if kind == "malformed_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    if kind == "wrong_types":
        body = response.json()
        assert body.get("id") != task_id or not isinstance(body.get("status"), str)
    assert (await query(http, task_id)).status_code == 200


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ({"provider": "jimmy", "outcome": "canceled"}, "not a jimmy task state"),
        ({"provider": "minimax", "outcome": "canceled"}, "not a minimax task state"),
        ({"provider": "minimax", "result_list_length": 2}, "result_list_length"),
        ({"provider": "replicate", "outcome": "error", "error_code": 2013}, "HTTP status"),
        ({"provider": "replicate", "result_list_length": 17}, "less than or equal to 16"),
    ],
)
async def test_scripts_it_refuses(
    http: httpx.AsyncClient, script: dict[str, Any], reason: str
) -> None:
    response = await http.post("/_sandbox/tasks", json=script)

    assert response.status_code == 422
    assert reason in response.text


# --- the adapter against the fake -------------------------------------------------------------


async def adapter_poll(http: httpx.AsyncClient, task_id: str) -> PollOutcome:
    async def forward(request: httpx.Request) -> httpx.Response:
        return await http.get(request.url.path, headers=dict(request.headers))

    harness = make_harness(forward, kind=ProviderKind.REPLICATE, api_key="test-key")
    return await ReplicateAdapter().poll(harness.upstream, PollContext(task_id))


async def test_the_adapter_reads_every_answer(http: httpx.AsyncClient, clock: FakeClock) -> None:
    ids = {
        "one": await create(http, duration_s=6),
        "list": await create(http, duration_s=6, result_list_length=2),
        "failed": await create(http, duration_s=6, outcome="failed", error_message="bad input"),
        "canceled": await create(http, duration_s=6, outcome="canceled"),
        "aborted": await create(http, duration_s=6, outcome="expired"),
    }
    assert (await adapter_poll(http, ids["one"])).status is TaskStatus.QUEUED
    clock.advance(3)
    assert (await adapter_poll(http, ids["one"])).status is TaskStatus.PROCESSING
    clock.advance(3)

    outcomes = {name: await adapter_poll(http, task_id) for name, task_id in ids.items()}

    one, listed = outcomes["one"].result, outcomes["list"].result
    assert isinstance(one, ReplicateResult)
    assert isinstance(listed, ReplicateResult)
    assert one.output_urls == [one.output]
    assert listed.output_urls == listed.output
    assert len(listed.output_urls) == 2
    assert (one.model, one.version, one.predict_time_s) == (MODEL, VERSION, 4.0)
    assert {name: (o.status, o.error) for name, o in outcomes.items() if o.result is None} == {
        "failed": (TaskStatus.FAILED, {"code": "failed", "message": "bad input"}),
        "canceled": (
            TaskStatus.FAILED,
            {
                "code": "cancelled_upstream",
                "message": "the prediction was canceled (by its creator, or its deadline "
                "passed after it started)",
            },
        ),
        "aborted": (
            TaskStatus.EXPIRED,
            {"code": "aborted", "message": "the prediction's deadline passed before it started"},
        ),
    }
    clock.advance(3601)
    removed = await adapter_poll(http, ids["one"])
    assert (removed.status, removed.error and removed.error["code"]) == (
        TaskStatus.EXPIRED,
        "data_removed",
    )


async def test_the_adapter_fails_an_unknown_prediction(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await adapter_poll(http, "gm3qorzdhgbfurvjtvhg6dckhu")

    assert type(caught.value) is TaskError
    assert (caught.value.code, caught.value.message) == ("http_404", "Not found.")
