"""The sandbox's MiniMax video fake over HTTP (ASGI, fake clock): its query route, the File
Retrieve it shares with the T2A fake, its MP4, its key checks, faults and rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.sandbox.app import create_sandbox_app
from app.sandbox.fakes.minimax_video import ANSWERS, mp4_file
from app.sandbox.minimax import MINIMAX_LOGIN_FAIL
from app.sandbox.state import SandboxConfig
from tests.sandbox.support import FakeClock

BASE = "http://sandbox.test"
QUERY = "/v1/query/video_generation"
RETRIEVE = "/v1/files/retrieve"
KEY = {"Authorization": "Bearer test-key"}
OK = {"status_code": 0, "status_msg": "success"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig(minimax_rate=0, jimmy_rate=0, rates={"minimax_video": 0}, seed=7)


@pytest_asyncio.fixture
async def http(clock: FakeClock, config: SandboxConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sandbox_app(config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=KEY) as client:
        yield client


async def create(http: httpx.AsyncClient, **script: Any) -> dict[str, Any]:
    response = await http.post("/_sandbox/tasks", json={"provider": "minimax_video", **script})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def query(http: httpx.AsyncClient, task_id: object) -> dict[str, Any]:
    response = await http.get(QUERY, params={"task_id": str(task_id)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_task_runs_to_success_and_its_mp4_downloads(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, duration_s=9, status_case="title", queued_status="Queueing")
    task_id, file_id = created["id"], created["file_id"]
    # Ids as MiniMax video writes them: the task's a 15-digit string.
    assert isinstance(task_id, str)
    assert task_id.isdigit()
    assert len(task_id) == 15
    assert isinstance(file_id, int)

    assert await query(http, task_id) == {"task_id": task_id, "status": "Queueing", "base_resp": OK}
    clock.advance(3)
    # No file_id before success: the docs return it "when the task is successful".
    assert await query(http, task_id) == {
        "task_id": task_id,
        "status": "Processing",
        "base_resp": OK,
    }
    early = await http.get(RETRIEVE, params={"file_id": file_id})
    assert early.json()["base_resp"]["status_code"] == 2013

    clock.advance(6)
    assert await query(http, task_id) == {
        "task_id": task_id,
        "status": "Success",
        "file_id": str(file_id),
        "video_width": 1280,
        "video_height": 720,
        "base_resp": OK,
    }

    retrieved = (await http.get(RETRIEVE, params={"file_id": file_id})).json()
    expires = int(clock.wall) + 32_400
    assert retrieved == {
        "file": {
            "file_id": file_id,
            "bytes": 0,
            "created_at": int(created["ready_at"] - 9),
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": f"{BASE}/_sandbox/files/minimax_video/{file_id}.mp4?expires={expires}",
        },
        "base_resp": OK,
    }

    download = await http.get(retrieved["file"]["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert download.content == mp4_file(task_id, 16_384).read()
    assert download.content[4:12] == b"ftypisom"
    clock.advance(32_401)
    assert (await http.get(retrieved["file"]["download_url"])).status_code == 403

    state = (await http.get(f"/_sandbox/tasks/minimax_video/{task_id}")).json()
    assert state["polls"] == 3
    assert state["retrieves"] == 1
    assert state["failed_status"] == "Fail"
    assert state["status_case"] == "title"


async def test_a_failed_task_says_fail_by_default_and_failed_when_scripted(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    default = await create(http, duration_s=1, outcome="failed", status_case="title")
    scripted = await create(
        http, duration_s=1, outcome="failed", status_case="lower", failed_status="Failed"
    )
    clock.advance(1)

    assert await query(http, default["id"]) == {
        "task_id": default["id"],
        "status": "Fail",
        "base_resp": OK,
    }
    assert (await query(http, scripted["id"]))["status"] == "failed"
    # A failed task has no file.
    retrieve = await http.get(RETRIEVE, params={"file_id": default["file_id"]})
    assert retrieve.json()["base_resp"]["status_code"] == 2013


async def test_an_error_outcome_answers_its_code_in_base_resp(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sensitive = await create(
        http, duration_s=0, outcome="error", error_code=1027, error_message="video is sensitive"
    )
    default = await create(http, duration_s=0, outcome="error")

    assert await query(http, sensitive["id"]) == {
        "task_id": sensitive["id"],
        "base_resp": {"status_code": 1027, "status_msg": "video is sensitive"},
    }
    assert (await query(http, default["id"]))["base_resp"] == {
        "status_code": 2013,
        "status_msg": "invalid params",
    }


async def test_success_without_file_id_for_the_scripted_queries(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create(http, duration_s=0, incomplete_queries=1, status_case="title")

    first = await query(http, created["id"])
    second = await query(http, created["id"])

    assert first == {"task_id": created["id"], "status": "Success", "base_resp": OK}
    assert second["file_id"] == str(created["file_id"])


async def test_an_unknown_task_is_invalid_params(http: httpx.AsyncClient) -> None:
    for task_id in ("106916112212032", "not-an-id", ""):
        assert await query(http, task_id) == {
            "task_id": task_id,
            "base_resp": {"status_code": 2013, "status_msg": "invalid params, task not found"},
        }


async def test_expired_is_no_video_state(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/_sandbox/tasks", json={"provider": "minimax_video", "outcome": "expired"}
    )

    assert response.status_code == 422
    assert "outcome 'expired' is not a minimax_video task state" in response.text


async def test_an_explicit_id_is_a_minimax_int64(http: httpx.AsyncClient) -> None:
    created = await create(http, id="106916112212032")
    refused = await http.post(
        "/_sandbox/tasks", json={"provider": "minimax_video", "id": "video-1"}
    )

    assert created["id"] == "106916112212032"
    assert refused.status_code == 422


@pytest.mark.parametrize(
    ("headers", "status", "code", "message"),
    [
        ({"Authorization": ""}, 200, 1004, MINIMAX_LOGIN_FAIL),
        ({"Authorization": "Bearer bad-key"}, 200, 1004, MINIMAX_LOGIN_FAIL),
        ({"Authorization": "Bearer bad-region-key"}, 401, 2049, "invalid api key"),
    ],
)
async def test_a_refused_key_gets_minimax_s_own_answer(
    http: httpx.AsyncClient, headers: dict[str, str], status: int, code: int, message: str
) -> None:
    created = await create(http)

    response = await http.get(QUERY, params={"task_id": created["id"]}, headers=headers)

    assert response.status_code == status
    assert response.json()["base_resp"] == {"status_code": code, "status_msg": message}


async def test_the_rate_limit_is_minimax_s_1002_with_http_200(
    http: httpx.AsyncClient,
) -> None:
    created = await create(http)
    await http.patch("/_sandbox/config", json={"rates": {"minimax_video": 1}})

    first = await http.get(QUERY, params={"task_id": created["id"]})
    second = await http.get(QUERY, params={"task_id": created["id"]})

    assert first.json()["base_resp"] == OK
    assert second.status_code == 200
    assert second.json()["base_resp"] == {"status_code": 1002, "status_msg": "rate limit exceeded"}
    stats = (await http.get("/_sandbox/stats")).json()["providers"]["minimax_video"]
    assert stats["test-key"]["rejected_rate_limited"] == 1


def test_its_default_rate_is_pollhook_s_default() -> None:
    config = (create_sandbox_app(SandboxConfig()).state.sandbox).rates

    assert config["minimax_video"] == 5.0


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("malformed_json", lambda r: r.text == '{"task_id": "106916112212032", "status": "Succ'),
        ("wrong_types", lambda r: r.json() in ANSWERS.wrong_types),
        ("rate_limit", lambda r: r.json()["base_resp"]["status_code"] == 1002),
        ("http_500", lambda r: r.status_code == 500),
    ],
)
async def test_faults_for_this_provider_only(
    http: httpx.AsyncClient, kind: str, check: Any
) -> None:
    created = await create(http)
    await http.post("/_sandbox/faults", json={"kind": kind, "provider": "minimax_video"})

    faulted = await http.get(QUERY, params={"task_id": created["id"]})
    other = await http.get("/v1/query/t2a_async_query_v2", params={"task_id": "95157322514444"})

    assert check(faulted)
    assert other.json()["base_resp"]["status_code"] == 2013  # unknown there, but no fault


async def test_files_that_are_no_video_of_a_succeeded_task_are_404(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    video = await create(http, duration_s=0)
    t2a = (await http.post("/_sandbox/tasks", json={"provider": "minimax", "duration_s": 0})).json()
    running = await create(http, duration_s=60)
    expires = f"?expires={int(clock.wall) + 100}"

    for name in (
        f"{t2a['file_id']}.mp4",  # a T2A task's file is its tar, not an MP4
        f"{video['file_id']}.tar",
        f"{running['file_id']}.mp4",
        "abc.mp4",
        f"{video['file_id']}",
    ):
        response = await http.get(f"/_sandbox/files/minimax_video/{name}{expires}")
        assert response.status_code == 404, name
    # And the T2A fake serves no video under its own tar name.
    tar = await http.get(f"/_sandbox/files/{video['file_id']}.tar{expires}")
    assert tar.status_code == 404


@pytest.mark.parametrize("size", [36, 16_384, 200_000])
def test_the_mp4_is_exactly_its_size_and_a_function_of_its_seed(size: int) -> None:
    file = mp4_file("106916112212032", size)
    data = file.read()

    assert len(data) == file.size == size
    assert data[:4] == (28).to_bytes(4, "big")
    assert data[4:8] == b"ftyp"
    assert data[28:36] == (size - 28).to_bytes(4, "big") + b"mdat"
    assert data == mp4_file("106916112212032", size).read()
    if size > 36:
        assert data != mp4_file("106916112212033", size).read()


def test_an_mp4_smaller_than_its_boxes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 36 bytes"):
        mp4_file("1", 35)
