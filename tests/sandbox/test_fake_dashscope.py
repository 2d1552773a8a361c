"""The sandbox's DashScope fake over HTTP (ASGI, a fake clock): the task query's documented
shapes, every scripted outcome, key and rate-limit refusals, and the transcripts behind its
transcription URLs. The adapter reads what it serves as it reads DashScope's own answers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from app.core.config import ProviderKind, ProviderSettings
from app.models import TaskStatus
from app.providers.base import PollContext, ResultNotReady
from app.providers.dashscope import DashscopeAdapter, DashscopeResult
from app.providers.http import HttpUpstream
from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.dashscope import transcript
from app.sandbox.state import SandboxConfig
from tests.sandbox.support import FakeClock

BASE = "http://sandbox.test"
QUERY = "/api/v1/tasks/"
KEY = {"Authorization": "Bearer test-key"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig(rates={"dashscope": 0}, seed=7)


@pytest.fixture
def app(clock: FakeClock, config: SandboxConfig) -> FastAPI:
    return create_sandbox_app(config, clock=clock)


@pytest_asyncio.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> str:
    response = await http.post("/_sandbox/tasks", json={"provider": "dashscope", **script})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


async def query(http: httpx.AsyncClient, task_id: str) -> httpx.Response:
    return await http.get(QUERY + task_id)


async def test_a_task_queues_runs_and_succeeds_with_its_transcript(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    task_id = await create(http, duration_s=9)
    assert UUID.fullmatch(task_id)

    statuses = []
    for _ in range(3):  # at 0 s, 3 s and 6 s of 9
        response = await query(http, task_id)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"request_id", "output", "usage"}
        assert body["output"]["task_id"] == task_id
        assert body["output"]["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 0}
        assert TIME.fullmatch(body["output"]["submit_time"])
        statuses.append(body["output"]["task_status"])
        clock.advance(3)
    assert statuses == ["PENDING", "RUNNING", "RUNNING"]

    body = (await query(http, task_id)).json()
    output = body["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert TIME.fullmatch(output["end_time"])
    assert output["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    [result] = output["results"]
    expires = int(clock.wall) + 32_400  # 9 h from when the task finished: now
    assert result == {
        "file_url": f"{BASE}/_sandbox/inputs/{task_id}-1.mp3",
        "transcription_url": f"{BASE}/_sandbox/files/dashscope/{task_id}-1.json?expires={expires}",
        "subtask_status": "SUCCEEDED",
    }
    assert body["usage"]["duration"] >= 1

    downloaded = await http.get(result["transcription_url"])
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "application/json"
    document = downloaded.json()
    [channel] = document["transcripts"]
    assert channel["sentences"][0]["begin_time"] == 0
    assert channel["text"]
    # The bytes are the generator's, so a test can know them from the task alone.
    task = app.state.sandbox.tasks.get("dashscope", task_id)
    assert downloaded.content == transcript(task, 1).read()
    state = (await http.get(f"/_sandbox/tasks/dashscope/{task_id}")).json()
    assert state["downloads"] == 1


async def test_some_files_fail_while_the_task_succeeds(http: httpx.AsyncClient) -> None:
    task_id = await create(http, duration_s=0, files=3, failed_files=1)

    output = (await query(http, task_id)).json()["output"]

    assert output["task_status"] == "SUCCEEDED"
    assert output["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 2, "FAILED": 1}
    failed, *succeeded = output["results"]
    assert failed == {
        "file_url": f"{BASE}/_sandbox/inputs/{task_id}-1.mp3",
        "code": "InvalidFile.DownloadFailed",
        "message": "The audio file cannot be downloaded.",
        "subtask_status": "FAILED",
    }
    assert [r["subtask_status"] for r in succeeded] == ["SUCCEEDED", "SUCCEEDED"]
    # A failed file has no transcript to serve.
    assert (
        await http.get(f"/_sandbox/files/dashscope/{task_id}-1.json?expires=1")
    ).status_code == 404
    for item in succeeded:
        assert (await http.get(item["transcription_url"])).status_code == 200


async def test_every_file_failed_still_says_succeeded(http: httpx.AsyncClient) -> None:
    task_id = await create(
        http, duration_s=0, failed_files=1, error_name="InvalidFile.AudioLengthError"
    )

    output = (await query(http, task_id)).json()["output"]

    assert output["task_status"] == "SUCCEEDED"
    assert output["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 1}
    assert output["results"][0]["code"] == "InvalidFile.AudioLengthError"


@pytest.mark.parametrize(
    ("script", "status", "fields"),
    [
        (
            {"outcome": "failed"},
            "FAILED",
            {"code": "InvalidFile.DownloadFailed", "message": "audio generation failed"},
        ),
        (
            {"outcome": "failed", "error_name": "InternalError.Algo", "error_message": "boom"},
            "FAILED",
            {"code": "InternalError.Algo", "message": "boom"},
        ),
        ({"outcome": "canceled"}, "CANCELED", {}),
    ],
)
async def test_end_states(
    http: httpx.AsyncClient, script: dict[str, Any], status: str, fields: dict[str, Any]
) -> None:
    task_id = await create(http, duration_s=0, **script)

    body = (await query(http, task_id)).json()

    output = body["output"]
    assert output["task_status"] == status
    assert {k: output[k] for k in fields} == fields
    assert "results" not in output
    assert body["usage"] is None


async def test_expired_is_a_task_dashscope_no_longer_knows(http: httpx.AsyncClient) -> None:
    task_id = await create(http, duration_s=0, outcome="expired")

    body = (await query(http, task_id)).json()

    assert body["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}


@pytest.mark.parametrize(
    ("script", "status", "code", "message"),
    [
        ({}, 400, "InvalidParameter", "task_id is invalid"),
        (
            {"error_code": 500, "error_name": "InternalError", "error_message": "retry"},
            500,
            "InternalError",
            "retry",
        ),
    ],
)
async def test_a_scripted_error_answers_dashscopes_refusal(
    http: httpx.AsyncClient, script: dict[str, Any], status: int, code: str, message: str
) -> None:
    task_id = await create(http, duration_s=0, outcome="error", **script)

    response = await query(http, task_id)

    assert response.status_code == status
    body = response.json()
    assert set(body) == {"request_id", "code", "message"}
    assert (body["code"], body["message"]) == (code, message)


async def test_done_without_results_for_scripted_queries(http: httpx.AsyncClient) -> None:
    task_id = await create(http, duration_s=0, incomplete_queries=1)

    first, second = [(await query(http, task_id)).json()["output"] for _ in range(2)]

    assert first["task_status"] == second["task_status"] == "SUCCEEDED"
    assert "results" not in first
    assert "results" in second


async def test_an_unknown_task_is_unknown(http: httpx.AsyncClient) -> None:
    response = await query(http, "7bac899c-06ec-4a79-8875-0c46b17950d1")

    assert response.status_code == 200
    assert response.json()["output"] == {
        "task_id": "7bac899c-06ec-4a79-8875-0c46b17950d1",
        "task_status": "UNKNOWN",
    }


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": "Bearer bad-key"}, "Invalid API-key provided."),
        ({"Authorization": ""}, "No API-key provided."),
    ],
)
async def test_a_refused_key_is_invalid_api_key(
    http: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    task_id = await create(http)

    response = await http.get(QUERY + task_id, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "InvalidApiKey"
    assert response.json()["message"] == message


@pytest.mark.parametrize("config", [SandboxConfig(seed=7)])
async def test_over_20_per_second_is_throttled(http: httpx.AsyncClient, clock: FakeClock) -> None:
    task_id = await create(http)

    answers = [(await query(http, task_id)).status_code for _ in range(21)]

    assert answers == [200] * 20 + [429]
    refused = await query(http, task_id)
    assert refused.json()["code"] == "Throttling.RateQuota"
    assert "retry-after" not in refused.headers
    clock.advance(1)
    assert (await query(http, task_id)).status_code == 200
    stats = (await http.get("/_sandbox/stats")).json()["providers"]["dashscope"]["test-key"]
    assert stats["rejected_rate_limited"] == 2


@pytest.mark.parametrize("kind", ["malformed_json", "wrong_types"])
async def test_faults_answer_in_dashscopes_shape(http: httpx.AsyncClient, kind: str) -> None:
    task_id = await create(http)
    fault = await http.post("/_sandbox/faults", json={"kind": kind, "provider": "dashscope"})
    assert fault.status_code == 201

    response = await query(http, task_id)

    assert response.status_code == 200
    if kind == "malformed_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
    else:
        assert "request_id" in response.json()


@pytest.mark.parametrize(
    "script",
    [
        {"provider": "minimax", "outcome": "canceled"},
        {"provider": "jimmy", "outcome": "canceled"},
        {"provider": "jimmy", "files": 2},
        {"provider": "minimax", "error_name": "InvalidParameter"},
        {"provider": "dashscope", "failed_files": 2},
        {"provider": "dashscope", "files": 101},
        {"provider": "dashscope", "error_name": "no spaces"},
        {"provider": "dashscope", "message_in_msg": True},
        {"provider": "dashscope", "queued_status": "Queueing"},
        {"provider": "dashscope", "id": "6351FEEF-9694-45D2-9D32-63454F2FFB8D"},
        {"provider": "dashscope", "id": "task-1"},
    ],
)
async def test_scripts_that_do_not_fit_dashscope_are_refused(
    http: httpx.AsyncClient, script: dict[str, Any]
) -> None:
    response = await http.post("/_sandbox/tasks", json=script)

    assert response.status_code == 422, response.text


async def test_an_explicit_id_and_batches(http: httpx.AsyncClient) -> None:
    task_id = "6351feef-9694-45d2-9d32-63454f2ffb8d"
    assert await create(http, id=task_id) == task_id
    batch = await http.post(
        "/_sandbox/tasks/batch", json={"provider": "dashscope", "count": 3, "duration_s": 0}
    )
    assert batch.status_code == 201
    ids = batch.json()["ids"]
    assert len(set(ids)) == 3
    assert all(UUID.fullmatch(i) for i in ids)
    state = (await http.get(f"/_sandbox/tasks/dashscope/{task_id}")).json()
    assert (state["files"], state["failed_files"], state["status"]) == (1, 0, "PENDING")


async def test_the_adapter_reads_the_fake(http: httpx.AsyncClient) -> None:
    """DashScope's adapter, over a real HttpUpstream, takes the fake's answers as DashScope's."""
    ok = await create(http, duration_s=0, files=2, failed_files=1)
    all_failed = await create(http, duration_s=0, failed_files=1)
    incomplete = await create(http, duration_s=0, incomplete_queries=1)
    settings = ProviderSettings(
        kind=ProviderKind.DASHSCOPE,
        base_url=BASE,
        api_key=SecretStr("test-key"),
        rate_limit_per_s=0,
        first_poll_delay_s=0,
        min_poll_interval_s=1,
        max_poll_interval_s=10,
        request_timeout_s=5,
        deadline_s=60,
    )
    adapter = DashscopeAdapter(clock=lambda: datetime(2027, 1, 15, tzinfo=UTC))

    async def free() -> None:
        return None

    async def go() -> bool:
        return True

    upstream = HttpUpstream(http, settings, free, go, adapter.auth_headers)

    outcome = await adapter.poll(upstream, PollContext(ok))
    assert outcome.status is TaskStatus.SUCCEEDED
    assert isinstance(outcome.result, DashscopeResult)
    assert outcome.result.partial
    assert [f.status for f in outcome.result.files] == ["failed", "succeeded"]
    [archived] = adapter.result_files(outcome.result, datetime(2027, 1, 15, tzinfo=UTC))
    assert (await http.get(archived.url)).status_code == 200

    failed = await adapter.poll(upstream, PollContext(all_failed))
    assert failed.status is TaskStatus.FAILED
    assert failed.error == {
        "code": "InvalidFile.DownloadFailed",
        "message": "The audio file cannot be downloaded.",
    }

    with pytest.raises(ResultNotReady):
        await adapter.poll(upstream, PollContext(incomplete))
