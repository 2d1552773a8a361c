"""The sandbox over HTTP: provider answers, control API, faults, rate limits, the CLI command.

In-process tests use a fake clock, so task durations and windows pass without sleeping; one
test runs the real `pollhook sandbox` process and talks to it over a socket.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.sandbox.app import create_sandbox_app
from app.sandbox.minimax import MINIMAX_LOGIN_FAIL
from app.sandbox.state import SandboxConfig
from tests.sandbox.support import FakeClock, sandbox_command

BASE = "http://sandbox.test"
MINIMAX_QUERY = "/v1/query/t2a_async_query_v2"
MINIMAX_FILE = "/v1/files/retrieve"
JIMMY_QUERY = "/api/open-api/v1/audios/"
KEY = {"Authorization": "Bearer test-key"}
OK = {"status_code": 0, "status_msg": "success"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=7)


@pytest_asyncio.fixture
async def http(clock: FakeClock, config: SandboxConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app(config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/tasks", json=script)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def minimax(http: httpx.AsyncClient, task_id: object) -> httpx.Response:
    return await http.get(MINIMAX_QUERY, params={"task_id": str(task_id)})


async def jimmy(http: httpx.AsyncClient, task_id: str) -> httpx.Response:
    return await http.get(JIMMY_QUERY + task_id)


# --- MiniMax ----------------------------------------------------------------------------------


async def test_minimax_task_runs_to_success_and_its_file_resolves(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, provider="minimax", duration_s=10, status_case="title")
    task_id, file_id = created["id"], created["file_id"]
    assert isinstance(task_id, int)
    assert created["ready_at"] == clock.wall + 10

    running = await minimax(http, task_id)
    assert running.status_code == 200
    assert running.json() == {
        "task_id": task_id,
        "status": "Processing",
        "file_id": file_id,  # present while processing: not a sign of completion
        "base_resp": OK,
    }
    # Before success there is no file to retrieve.
    early = await http.get(MINIMAX_FILE, params={"file_id": file_id})
    assert early.json()["base_resp"]["status_code"] == 2013

    clock.advance(10)
    done = (await minimax(http, task_id)).json()
    assert done["status"] == "Success"

    retrieved = await http.get(MINIMAX_FILE, params={"file_id": file_id})
    file = retrieved.json()["file"]
    assert retrieved.json()["base_resp"] == OK
    assert file["file_id"] == file_id
    assert file["bytes"] == 0
    assert file["filename"] == f"{task_id}.tar"
    assert file["purpose"] == "t2a_async"
    expires = int(clock.wall) + 32_400
    assert file["download_url"] == f"{BASE}/_sandbox/files/{file_id}.tar?expires={expires}"

    download = await http.get(file["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/x-tar"
    assert download.content
    clock.advance(32_401)
    assert (await http.get(file["download_url"])).status_code == 403

    state = (await http.get(f"/_sandbox/tasks/minimax/{task_id}")).json()
    assert state["polls"] == 2  # file retrieves are not polls
    assert state["first_done_poll_at"] == created["ready_at"]
    assert state["status"] == "Success"
    assert state["done"] is True


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"outcome": "failed", "status_case": "title"}, {"status": "Failed"}),
        ({"outcome": "expired", "status_case": "title"}, {"status": "Expired"}),
        ({"outcome": "success", "status_case": "lower"}, {"status": "success"}),
        ({"outcome": "expired", "status_case": "lower"}, {"status": "expired"}),
        (
            {"outcome": "error"},
            {"base_resp": {"status_code": 2013, "status_msg": "invalid params"}},
        ),
        (
            {"outcome": "error", "error_code": 1000, "error_message": "unknown error"},
            {"base_resp": {"status_code": 1000, "status_msg": "unknown error"}},
        ),
    ],
)
async def test_minimax_outcomes(
    http: httpx.AsyncClient, script: dict[str, Any], expected: dict[str, Any]
) -> None:
    task_id = (await create(http, provider="minimax", duration_s=0, **script))["id"]
    body = (await minimax(http, task_id)).json()
    assert body["task_id"] == task_id
    for field, value in expected.items():
        assert body[field] == value
    if script["outcome"] == "error":
        assert "status" not in body
        assert "file_id" not in body


async def test_minimax_expired_and_failed_tasks_have_no_file(http: httpx.AsyncClient) -> None:
    for outcome in ("expired", "failed"):
        file_id = (await create(http, provider="minimax", duration_s=0, outcome=outcome))["file_id"]
        body = (await http.get(MINIMAX_FILE, params={"file_id": file_id})).json()
        assert body["base_resp"]["status_code"] == 2013


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"task_id": ""},
        {"task_id": "abc"},
        {"task_id": "-5"},
        {"task_id": "1.5"},
        {"task_id": "9" * 30},
    ],
)
async def test_minimax_invalid_task_ids_get_2013(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await http.get(MINIMAX_QUERY, params=params)
    assert response.status_code == 200
    assert response.json() == {
        "base_resp": {
            "status_code": 2013,
            "status_msg": "invalid params, task_id must be a positive integer",
        }
    }


async def test_minimax_unknown_task_and_file(http: httpx.AsyncClient) -> None:
    assert (await minimax(http, 95157322514444)).json() == {
        "task_id": 95157322514444,
        "base_resp": {"status_code": 2013, "status_msg": "invalid params, task not found"},
    }
    for params in ({"file_id": "123"}, {"file_id": "x"}, {}):
        body = (await http.get(MINIMAX_FILE, params=params)).json()
        assert body["base_resp"]["status_code"] == 2013


@pytest.mark.parametrize(
    ("headers", "status", "code", "message"),
    [
        ({}, 200, 1004, MINIMAX_LOGIN_FAIL),
        ({"Authorization": "Basic abc"}, 200, 1004, MINIMAX_LOGIN_FAIL),
        ({"Authorization": "Bearer bad-key"}, 200, 1004, MINIMAX_LOGIN_FAIL),
        ({"Authorization": "Bearer bad-region-intl"}, 401, 2049, "invalid api key"),
    ],
)
async def test_minimax_refuses_bad_keys(
    http: httpx.AsyncClient, headers: dict[str, str], status: int, code: int, message: str
) -> None:
    task_id = (await create(http, provider="minimax"))["id"]
    http.headers.pop("Authorization")
    for path, params in ((MINIMAX_QUERY, {"task_id": task_id}), (MINIMAX_FILE, {"file_id": 1})):
        response = await http.get(path, params=params, headers=headers)
        assert response.status_code == status
        assert response.json() == {"base_resp": {"status_code": code, "status_msg": message}}


@pytest.mark.parametrize(
    ("script", "statuses"),
    [
        ({"queued_status": "Preparing", "status_case": "title"}, ["Preparing", "Processing"]),
        ({"queued_status": "Queueing", "status_case": "lower"}, ["queueing", "processing"]),
        ({"status_case": "title"}, ["Processing", "Processing"]),  # T2A: no queued phase
    ],
)
async def test_minimax_can_queue_first_with_the_words_of_its_other_apis(
    http: httpx.AsyncClient, clock: FakeClock, script: dict[str, Any], statuses: list[str]
) -> None:
    task_id = (await create(http, provider="minimax", duration_s=9, **script))["id"]
    seen = []
    for _ in range(2):  # at 0 s and 3 s of 9
        seen.append((await minimax(http, task_id)).json()["status"])
        clock.advance(3)
    assert seen == statuses


@pytest.mark.parametrize(("case", "word"), [("title", "Fail"), ("lower", "fail")])
async def test_minimax_can_say_fail(http: httpx.AsyncClient, case: str, word: str) -> None:
    task_id = (
        await create(
            http,
            provider="minimax",
            duration_s=0,
            outcome="failed",
            failed_status="Fail",
            status_case=case,
        )
    )["id"]
    assert (await minimax(http, task_id)).json()["status"] == word


async def test_minimax_success_without_file_id_for_scripted_queries(
    http: httpx.AsyncClient,
) -> None:
    created = await create(http, provider="minimax", duration_s=0, incomplete_queries=2)
    answers = [(await minimax(http, created["id"])).json() for _ in range(3)]
    assert [a["status"].lower() for a in answers] == ["success"] * 3
    assert ["file_id" in a for a in answers] == [False, False, True]
    assert answers[2]["file_id"] == created["file_id"]


async def test_minimax_file_not_ready_for_scripted_retrieves(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, provider="minimax", duration_s=0, file_not_ready_retrieves=2)
    await minimax(http, created["id"])
    answers = [
        (await http.get(MINIMAX_FILE, params={"file_id": created["file_id"]})).json()
        for _ in range(3)
    ]
    assert [a["base_resp"]["status_code"] for a in answers] == [2013, 2013, 0]
    assert answers[2]["file"]["download_url"].startswith(f"{BASE}/_sandbox/files/")
    state = (await http.get(f"/_sandbox/tasks/minimax/{created['id']}")).json()
    assert (state["polls"], state["done_polls"], state["retrieves"]) == (1, 1, 3)


async def test_minimax_backup_url_only_and_a_shorter_url_lifetime(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(
        http, provider="minimax", duration_s=0, backup_url_only=True, url_ttl_s=60
    )
    file = (await http.get(MINIMAX_FILE, params={"file_id": created["file_id"]})).json()["file"]
    assert "download_url" not in file
    url = file["backup_download_url"]
    assert url == f"{BASE}/_sandbox/files/{created['file_id']}.tar?expires={int(clock.wall) + 60}"
    assert (await http.get(url)).status_code == 200
    clock.advance(61)
    assert (await http.get(url)).status_code == 403


# --- Jimmy ------------------------------------------------------------------------------------


async def test_jimmy_clone_task_queues_processes_and_completes(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(
        http, provider="jimmy", duration_s=9, model="clone", code_as_string=False
    )
    task_id = created["id"]
    assert re.fullmatch(r"audio_[0-9a-f-]{36}", task_id)
    assert "file_id" not in created

    statuses = []
    for _ in range(3):  # at 0 s, 3 s and 6 s of 9
        body = (await jimmy(http, task_id)).json()
        assert (body["code"], body["msg"]) == (20000, "ok")
        statuses.append(body["data"]["status"])
        clock.advance(3)
    assert statuses == ["queued", "processing", "processing"]

    body = (await jimmy(http, task_id)).json()
    data = body["data"]
    assert data == {
        "id": task_id,
        "object": "audio",
        "created": int(clock.wall - 9),
        "model": "soundCloningClone",
        "status": "completed",
        "modelId": data["modelId"],
        "audioUrl": f"{BASE}/_sandbox/files/{task_id}.mp3?expires={int(clock.wall) + 32_400}",
        "error": None,
    }
    assert re.fullmatch(r"model_\d+", data["modelId"])
    assert (await http.get(data["audioUrl"])).status_code == 200


@pytest.mark.parametrize(("subtitles", "has_subtitles"), [(True, True), (False, False)])
async def test_jimmy_audio_task_subtitles(
    http: httpx.AsyncClient, subtitles: bool, has_subtitles: bool
) -> None:
    task_id = (await create(http, provider="jimmy", duration_s=0, subtitles=subtitles))["id"]
    data = (await jimmy(http, task_id)).json()["data"]
    assert data["model"] == "soundCloningAudio"
    assert "modelId" not in data
    assert ("subtitleFile" in data) is has_subtitles
    assert data["audioUrl"].split("?")[0].endswith(".mp3")


@pytest.mark.parametrize(
    ("script", "code", "msg", "data"),
    [
        ({"code_as_string": True}, "20000", "ok", "completed"),
        ({"outcome": "failed", "error_message": "voice rejected"}, 20000, "ok", "failed"),
        (
            {"outcome": "error", "error_code": -1, "error_message": "server error"},
            -1,
            "server error",
            None,
        ),
        ({"outcome": "error", "code_as_string": True}, "20002", "invalid params", None),
    ],
)
async def test_jimmy_outcomes(
    http: httpx.AsyncClient, script: dict[str, Any], code: object, msg: str, data: str | None
) -> None:
    script = {"code_as_string": False, **script}
    task_id = (await create(http, provider="jimmy", duration_s=0, **script))["id"]
    body = (await jimmy(http, task_id)).json()
    assert (body["code"], body["msg"]) == (code, msg)
    if data is None:
        assert body["data"] is None
    else:
        assert body["data"]["status"] == data
    if data == "failed":
        assert body["data"]["error"] == "voice rejected"


@pytest.mark.parametrize(
    ("headers", "path", "code", "msg"),
    [
        (KEY, "audio_nope", 20002, "task not found"),
        (KEY, "%00", 20002, "task not found"),
        ({"Authorization": "Bearer bad"}, "audio_nope", 20001, "invalid api key"),
        ({"Authorization": ""}, "audio_nope", 20001, "invalid api key"),
    ],
)
async def test_jimmy_unknown_tasks_and_bad_keys(
    http: httpx.AsyncClient, headers: dict[str, str], path: str, code: int, msg: str
) -> None:
    response = await http.get(JIMMY_QUERY + path, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"code": code, "msg": msg, "data": None}


@pytest.mark.parametrize("model", ["clone", "audio"])
async def test_jimmy_completed_without_its_result_for_scripted_queries(
    http: httpx.AsyncClient, model: str
) -> None:
    task_id = (
        await create(
            http, provider="jimmy", duration_s=0, model=model, subtitles=True, incomplete_queries=1
        )
    )["id"]
    first, second = [(await jimmy(http, task_id)).json()["data"] for _ in range(2)]
    assert first["status"] == second["status"] == "completed"
    assert not {"audioUrl", "subtitleFile"} & set(first)
    assert "audioUrl" in second
    assert ("subtitleFile" in second) is (model == "audio")
    assert ("modelId" in first) is ("modelId" in second) is (model == "clone")


async def test_jimmy_failure_explained_only_in_the_envelope_msg(http: httpx.AsyncClient) -> None:
    task_id = (
        await create(
            http,
            provider="jimmy",
            duration_s=0,
            outcome="failed",
            error_message="source audio shorter than 15 s",
            message_in_msg=True,
        )
    )["id"]
    body = (await jimmy(http, task_id)).json()
    assert body["msg"] == "source audio shorter than 15 s"
    assert body["data"]["status"] == "failed"
    assert body["data"]["error"] is None


# --- control API ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        {"provider": "jimmy", "outcome": "expired"},
        {"provider": "other"},
        {"provider": "minimax", "duration_s": -1},
        {"provider": "minimax", "outcome": "done"},
        {"provider": "minimax", "surprise": 1},
        {"provider": "minimax", "id": "abc"},
        {"provider": "minimax", "id": 0},
        {"provider": "minimax", "id": True},
        {"provider": "jimmy", "id": "has/slash"},
        {"provider": "jimmy", "id": ""},
        {"provider": "jimmy", "queued_status": "Preparing"},
        {"provider": "jimmy", "failed_status": "Fail"},
        {"provider": "jimmy", "file_not_ready_retrieves": 1},
        {"provider": "jimmy", "backup_url_only": True},
        {"provider": "minimax", "message_in_msg": True},
        {"provider": "minimax", "queued_status": "Waiting"},
        {"provider": "minimax", "failed_status": "Error"},
        {"provider": "minimax", "incomplete_queries": -1},
        {"provider": "minimax", "url_ttl_s": 0},
        {"provider": "jimmy", "url_ttl_s": -1},
        {"provider": "minimax", "result_bytes": 100},
        {"provider": "jimmy", "result_bytes": 2**30 + 1},
        {"provider": "jimmy", "result_bytes": 1.5},
        {"provider": "minimax", "failed_downloads": -1},
        {"provider": "jimmy", "cut_downloads": 1001},
    ],
)
async def test_task_scripts_are_validated(http: httpx.AsyncClient, script: dict[str, Any]) -> None:
    response = await http.post("/_sandbox/tasks", json=script)
    assert response.status_code == 422, response.text


async def test_explicit_ids(http: httpx.AsyncClient) -> None:
    created = await create(http, provider="minimax", id="0095157322514444")
    assert created["id"] == 95157322514444
    assert (await minimax(http, 95157322514444)).json()["base_resp"] == OK
    again = await http.post("/_sandbox/tasks", json={"provider": "minimax", "id": 95157322514444})
    assert again.status_code == 409
    assert (await create(http, provider="jimmy", id="audio_mine"))["id"] == "audio_mine"
    assert (await jimmy(http, "audio_mine")).json()["code"] in (20000, "20000")


async def test_batch_creation(http: httpx.AsyncClient, clock: FakeClock) -> None:
    response = await http.post(
        "/_sandbox/tasks/batch", json={"provider": "minimax", "count": 2000, "duration_s": 3}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 2000
    assert len(set(body["ids"])) == len(set(body["file_ids"])) == 2000
    assert all(isinstance(i, int) for i in body["ids"])
    assert body["ready_at"] == clock.wall + 3

    jimmy_batch = await http.post("/_sandbox/tasks/batch", json={"provider": "jimmy", "count": 3})
    assert "file_ids" not in jimmy_batch.json()
    assert all(i.startswith("audio_") for i in jimmy_batch.json()["ids"])

    for bad in ({"count": 0}, {"count": 100_001}, {"count": 2, "id": "x"}, {}):
        refused = await http.post("/_sandbox/tasks/batch", json={"provider": "jimmy", **bad})
        assert refused.status_code == 422
    config = (await http.get("/_sandbox/config")).json()
    assert config["tasks"] == 2003


async def test_task_cap_is_a_conflict(clock: FakeClock) -> None:
    app = create_sandbox_app(SandboxConfig(max_tasks=5), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        response = await http.post("/_sandbox/tasks/batch", json={"provider": "jimmy", "count": 6})
    assert response.status_code == 409
    assert "at most 5" in response.json()["detail"]


async def test_read_task(http: httpx.AsyncClient, clock: FakeClock) -> None:
    created = await create(http, provider="jimmy", duration_s=6, code_as_string=True)
    url = f"/_sandbox/tasks/jimmy/{created['id']}"
    state = (await http.get(url)).json()
    assert state["phase"] == "queued"
    assert state["status"] == "queued"
    assert state["code_as_string"] is True
    assert state["status_case"] is None
    assert (state["polls"], state["first_done_poll_at"]) == (0, None)
    clock.advance(7)
    await jimmy(http, created["id"])
    state = (await http.get(url)).json()
    assert (state["phase"], state["polls"]) == ("done", 1)
    assert state["first_done_poll_at"] == clock.wall
    for missing in ("/_sandbox/tasks/jimmy/audio_x", "/_sandbox/tasks/minimax/12"):
        assert (await http.get(missing)).status_code == 404
    assert (await http.get("/_sandbox/tasks/other/12")).status_code == 422


async def test_reset_and_health(http: httpx.AsyncClient) -> None:
    task_id = (await create(http, provider="minimax"))["id"]
    await http.post("/_sandbox/faults", json={"kind": "html", "provider": "jimmy"})
    await minimax(http, task_id)
    assert (await http.post("/_sandbox/reset")).status_code == 204
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["minimax"] == stats["jimmy"] == {}
    assert all(per_key == {} for per_key in stats["providers"].values())
    assert (await http.get("/_sandbox/faults")).json() == {"faults": []}
    assert (await minimax(http, task_id)).json()["base_resp"]["status_code"] == 2013
    assert (await http.get("/_sandbox/health")).json() == {"status": "ok"}


# --- faults -----------------------------------------------------------------------------------


def assert_minimax_fault(kind: str, response: httpx.Response) -> None:
    expected_status = {"http_500": 500, "http_503": 503, "html": 502}.get(kind, 200)
    assert response.status_code == expected_status
    if kind == "http_503":
        assert response.headers["retry-after"] == "1"
    if kind == "html":
        assert response.headers["content-type"].startswith("text/html")
        assert "<center>nginx</center>" in response.text
    if kind == "malformed_json":
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    if kind == "wrong_types":
        body = response.json()
        assert not isinstance(body.get("status"), str) or not isinstance(body["base_resp"], dict)
    if kind == "rate_limit":
        assert response.json() == {
            "base_resp": {"status_code": 1002, "status_msg": "rate limit exceeded"}
        }


def assert_jimmy_fault(kind: str, response: httpx.Response) -> None:
    expected_status = {"http_500": 500, "http_503": 503, "html": 502, "rate_limit": 429}
    assert response.status_code == expected_status.get(kind, 200)
    if kind == "malformed_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
    if kind == "wrong_types":
        body = response.json()
        assert not isinstance(body["code"], int | str) or not isinstance(body["data"], dict)
    if kind == "rate_limit":
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"code": -1, "msg": "rate limited", "data": None}


FAULT_KINDS = ["http_500", "http_503", "html", "malformed_json", "wrong_types", "rate_limit"]


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_faults_replace_provider_answers_once(http: httpx.AsyncClient, kind: str) -> None:
    minimax_id = (await create(http, provider="minimax"))["id"]
    jimmy_id = (await create(http, provider="jimmy"))["id"]
    for provider in ("minimax", "jimmy"):
        added = await http.post(
            "/_sandbox/faults", json={"kind": kind, "provider": provider, "count": 1}
        )
        assert added.status_code == 201
        assert added.json()["id"].startswith("flt_")
    # Faults never touch the control API.
    assert (await http.get("/_sandbox/health")).status_code == 200

    assert_minimax_fault(kind, await minimax(http, minimax_id))
    assert_jimmy_fault(kind, await jimmy(http, jimmy_id))
    assert (await minimax(http, minimax_id)).json()["base_resp"] == OK
    assert (await jimmy(http, jimmy_id)).status_code == 200
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["minimax"]["test-key"]["faults_injected"] == 1
    state = (await http.get(f"/_sandbox/tasks/minimax/{minimax_id}")).json()
    assert state["polls"] == 1  # a faulted request never reached the task


async def test_wrong_types_variants_all_break_the_schema(http: httpx.AsyncClient) -> None:
    await http.post("/_sandbox/faults", json={"kind": "wrong_types"})
    for _ in range(12):
        assert_minimax_fault("wrong_types", await minimax(http, 1))
        assert_jimmy_fault("wrong_types", await jimmy(http, "audio_x"))


@pytest.mark.parametrize("kind", ["latency", "timeout"])
async def test_delaying_faults_answer_normally_afterwards(
    http: httpx.AsyncClient, kind: str
) -> None:
    task_id = (await create(http, provider="minimax"))["id"]
    await http.post("/_sandbox/faults", json={"kind": kind, "latency_s": 0.05, "count": 1})
    started = time.monotonic()
    response = await minimax(http, task_id)
    assert time.monotonic() - started >= 0.05
    assert response.json()["base_resp"] == OK


async def test_fault_list_expiry_and_removal(http: httpx.AsyncClient, clock: FakeClock) -> None:
    timed = (await http.post("/_sandbox/faults", json={"kind": "html", "duration_s": 5})).json()
    never = await http.post("/_sandbox/faults", json={"kind": "http_500", "probability": 0})
    listed = (await http.get("/_sandbox/faults")).json()["faults"]
    assert [f["kind"] for f in listed] == ["html", "http_500"]
    assert listed[0]["expires_at"] == clock.wall + 5
    assert listed[1]["latency_s"] == 0

    assert (await jimmy(http, "audio_x")).status_code == 502
    clock.advance(5)
    assert (await jimmy(http, "audio_x")).status_code == 200  # expired; the other never fires
    assert [f["kind"] for f in (await http.get("/_sandbox/faults")).json()["faults"]] == [
        "http_500"
    ]
    assert (await http.delete(f"/_sandbox/faults/{timed['id']}")).status_code == 404
    assert (await http.delete(f"/_sandbox/faults/{never.json()['id']}")).status_code == 204
    await http.post("/_sandbox/faults", json={"kind": "html"})
    assert (await http.delete("/_sandbox/faults")).json() == {"cleared": 1}


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "html", "probability": 1.5},
        {"kind": "timeout", "latency_s": 121},
        {"kind": "html", "count": 0},
        {"kind": "html", "duration_s": 0},
        {"kind": "html", "provider": "acme"},
    ],
)
async def test_fault_requests_are_validated(http: httpx.AsyncClient, fault: dict[str, Any]) -> None:
    assert (await http.post("/_sandbox/faults", json=fault)).status_code == 422


# --- rate limits and stats --------------------------------------------------------------------


@pytest.mark.parametrize("config", [SandboxConfig(minimax_rate=2, jimmy_rate=1)])
async def test_rate_limits_answer_like_the_providers(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    task_id = (await create(http, provider="minimax"))["id"]
    codes = []
    for _ in range(3):
        codes.append((await minimax(http, task_id)).json()["base_resp"]["status_code"])
        clock.advance(0.1)
    assert codes == [0, 0, 1002]
    other_key = await http.get(
        MINIMAX_QUERY, params={"task_id": task_id}, headers={"Authorization": "Bearer k2"}
    )
    assert other_key.json()["base_resp"] == OK  # limits are per key
    clock.advance(0.8)
    assert (await minimax(http, task_id)).json()["base_resp"] == OK

    assert (await jimmy(http, "audio_x")).status_code == 200
    limited = await jimmy(http, "audio_x")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"

    stats = (await http.get("/_sandbox/stats")).json()
    minimax_stats = stats["minimax"]["test-key"]
    assert minimax_stats["requests"] == 4
    assert minimax_stats["rejected_rate_limited"] == 1
    assert minimax_stats["max_in_any_1s_window"] == 3  # counts arrivals, not only accepted
    assert sum(minimax_stats["per_second"].values()) == 4
    assert stats["minimax"]["k2"]["requests"] == 1
    assert stats["jimmy"]["test-key"]["rejected_rate_limited"] == 1


@pytest.mark.parametrize("config", [SandboxConfig(minimax_rate=1)])
async def test_rates_can_change_at_runtime(http: httpx.AsyncClient) -> None:
    assert (await http.get("/_sandbox/config")).json()["minimax_rate"] == 1
    updated = await http.patch("/_sandbox/config", json={"minimax_rate": 0})
    assert updated.json()["minimax_rate"] == 0
    assert updated.json()["jimmy_rate"] == 5
    codes = {(await minimax(http, 1)).json()["base_resp"]["status_code"] for _ in range(20)}
    assert codes == {2013}  # unknown task, never 1002
    assert (await http.patch("/_sandbox/config", json={"jimmy_rate": -1})).status_code == 422


async def test_requests_without_a_key_are_counted_too(http: httpx.AsyncClient) -> None:
    http.headers.pop("Authorization")
    await minimax(http, 1)
    await jimmy(http, "audio_x")
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["minimax"]["(none)"]["requests"] == 1
    assert stats["jimmy"]["(none)"]["requests"] == 1


# --- the real command -------------------------------------------------------------------------


@pytest.fixture
def sandbox_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with sandbox_command("--minimax-rate", "0.5", "--seed", "1") as running:
        yield running


def test_sandbox_command_serves_over_http_and_stops_on_ctrl_c(
    sandbox_process: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = sandbox_process
    with httpx.Client(base_url=base, headers=KEY, timeout=5) as http:
        created = http.post("/_sandbox/tasks", json={"provider": "minimax", "duration_s": 0})
        task_id = created.json()["id"]
        first = http.get(MINIMAX_QUERY, params={"task_id": task_id}).json()
        assert first["status"] in ("Success", "success")
        # --minimax-rate 0.5 admits one request per 2 s: the second gets MiniMax's 1002.
        second = http.get(MINIMAX_QUERY, params={"task_id": task_id}).json()
        assert second["base_resp"]["status_code"] == 1002

        http.post("/_sandbox/faults", json={"kind": "timeout", "latency_s": 1, "provider": "jimmy"})
        with pytest.raises(httpx.ReadTimeout):
            http.get(JIMMY_QUERY + "audio_x", timeout=0.2)

        stats = http.get("/_sandbox/stats").json()
        assert stats["minimax"]["test-key"]["requests"] == 2
        assert stats["minimax"]["test-key"]["rejected_rate_limited"] == 1
        assert stats["jimmy"]["test-key"]["faults_injected"] == 1

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_sandbox_command_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
