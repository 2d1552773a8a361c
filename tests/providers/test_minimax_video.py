"""MiniMax video generation adapter against its documented answer shapes (docs/providers.md).

The poll it shares with T2A (app/providers/minimax_common.py) is pinned in full by
test_minimax_t2a.py; here every path runs again through the video route and its shapes:
string ids, `Fail`, the video's size, and callbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import DEFAULT_INSTANCES, KIND_DEFAULTS, ProviderKind
from app.models import TaskStatus
from app.providers.base import (
    RESULT_NOT_READY_POLLS,
    CallbackSigning,
    CredentialError,
    PollContext,
    PollOutcome,
    ProviderError,
    RateLimited,
    ResultFile,
    ResultNotReady,
    TaskError,
    TransientError,
)
from app.providers.external_ids import InvalidExternalId
from app.providers.minimax_video import MinimaxVideoAdapter, MinimaxVideoResult
from app.providers.registry import adapter_for, read_result
from tests.providers import (
    API_KEY,
    HTML_ERROR_PAGE,
    Handler,
    Harness,
    make_harness,
    raising,
    reply,
    routes,
)

# The ids of MiniMax's own examples: create answers "106916112212032", a callback names
# "115334141465231360", a recorded query "361720188367060" with file "361721749176519".
TASK_ID = "361720188367060"
FILE_ID = "361721749176519"
QUERY = "/v1/query/video_generation"
RETRIEVE = "/v1/files/retrieve"
BASE_URL = "https://api.minimax.test"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DOWNLOAD_URL = "https://video-product.cdn.minimax.test/output.mp4?Expires=1772398800&Signature=a"
NINE_HOURS_LATER = datetime(2026, 3, 1, 21, 0, 0, tzinfo=UTC)  # NOW + 32,400 s, whole seconds
OK = {"status_code": 0, "status_msg": "success"}


def query_body(status: Any = "Processing", **extra: Any) -> dict[str, Any]:
    return {"task_id": TASK_ID, "status": status, "base_resp": OK, **extra}


def success_body(**extra: Any) -> dict[str, Any]:
    # The recorded answer, verbatim: ids as strings, the size as numbers.
    body = {"status": "Success", "file_id": FILE_ID, "video_width": 1280, "video_height": 720}
    return query_body(**{**body, **extra})


def retrieve_body(**file: Any) -> dict[str, Any]:
    return {
        "file": {
            "file_id": int(FILE_ID),
            "bytes": 0,
            "created_at": 1769863897,
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": DOWNLOAD_URL,
            **file,
        },
        "base_resp": OK,
    }


def failing(code: int, msg: str = "boom") -> dict[str, Any]:
    return {"task_id": TASK_ID, "base_resp": {"status_code": code, "status_msg": msg}}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.MINIMAX_VIDEO, base_url=BASE_URL)


async def poll(harness: Harness, context: PollContext | None = None) -> PollOutcome:
    return await MinimaxVideoAdapter(clock=lambda: NOW).poll(
        harness.upstream, context or PollContext(TASK_ID)
    )


async def poll_error(harness: Harness, context: PollContext | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, context)
    return caught.value


def result(
    width: int | None = 1280, height: int | None = 720, filename: str | None = "output.mp4"
) -> MinimaxVideoResult:
    return MinimaxVideoResult(
        kind="minimax_video",
        file_id=FILE_ID,
        download_url=DOWNLOAD_URL,
        download_url_expires_at=NINE_HOURS_LATER,
        filename=filename,
        video_width=width,
        video_height=height,
    )


def test_registry_serves_this_adapter_with_its_instance_and_defaults() -> None:
    adapter = adapter_for(ProviderKind.MINIMAX_VIDEO)

    assert isinstance(adapter, MinimaxVideoAdapter)
    assert adapter.requests_per_success == 1
    assert adapter.auth_headers("k") == {"Authorization": "Bearer k"}
    assert DEFAULT_INSTANCES["minimax_video"] is ProviderKind.MINIMAX_VIDEO
    assert KIND_DEFAULTS[ProviderKind.MINIMAX_VIDEO]["base_url"] == "https://api.minimax.io"


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(query_body()))

    outcome = await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{QUERY}?task_id={TASK_ID}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert outcome == PollOutcome(TaskStatus.PROCESSING, "Processing", raw=query_body())
    assert outcome.ready_at is None  # MiniMax reports no queue position or ETA
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Preparing", TaskStatus.QUEUED),
        ("Queueing", TaskStatus.QUEUED),
        ("Processing", TaskStatus.PROCESSING),
        # The callback's lowercase words, should the query ever answer them.
        ("processing", TaskStatus.PROCESSING),
        ("queueing", TaskStatus.QUEUED),
    ],
)
async def test_statuses_before_the_end(status: str, expected: TaskStatus) -> None:
    harness = harness_for(reply(query_body(status)))

    outcome = await poll(harness)

    assert outcome == PollOutcome(expected, status, raw=query_body(status))
    assert harness.paths == [QUERY]


@pytest.mark.parametrize("status", ["Success", "success"])
async def test_success_resolves_the_file_into_the_video_url(status: str) -> None:
    query = success_body(status=status)
    harness = harness_for(routes({QUERY: reply(query), RETRIEVE: reply(retrieve_body())}))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == status
    assert outcome.result == result()
    assert outcome.result.model_dump(mode="json") == {
        "kind": "minimax_video",
        "file_id": FILE_ID,
        "download_url": DOWNLOAD_URL,
        "download_url_expires_at": "2026-03-01T21:00:00Z",
        "filename": "output.mp4",
        "video_width": 1280,
        "video_height": 720,
    }
    assert outcome.raw == {"query": query, "retrieve": retrieve_body()}
    assert outcome.error is None
    assert str(harness.requests[1].url) == f"{BASE_URL}{RETRIEVE}?file_id={FILE_ID}"
    assert harness.requests[1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert harness.slots == 2


async def test_ids_as_numbers_are_the_same_task_and_file() -> None:
    query = success_body(task_id=int(TASK_ID), file_id=int(FILE_ID))
    harness = harness_for(routes({QUERY: reply(query), RETRIEVE: reply(retrieve_body())}))

    outcome = await poll(harness)

    assert outcome.result == result()


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ({}, None),
        ({"video_width": 0, "video_height": 0}, None),
        ({"video_width": None, "video_height": None}, None),
    ],
)
async def test_a_success_without_a_size_has_none(size: dict[str, Any], expected: None) -> None:
    query = {**success_body(), **size}
    for name in ("video_width", "video_height"):
        if name not in size:
            del query[name]
    harness = harness_for(routes({QUERY: reply(query), RETRIEVE: reply(retrieve_body())}))

    outcome = await poll(harness)

    assert outcome.result == result(width=expected, height=expected)


@pytest.mark.parametrize("width", ["1280", 1280.5, -1, True, [1280], 10**6])
async def test_a_size_that_is_not_a_pixel_count_is_dropped_and_logged(width: Any) -> None:
    query = success_body(video_width=width)
    harness = harness_for(routes({QUERY: reply(query), RETRIEVE: reply(retrieve_body())}))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome.result == result(width=None)
    assert [e["event"] for e in logs] == ["provider.bad_dimension"]
    assert logs[0]["field"] == "video_width"


async def test_the_size_waits_in_the_checkpoint_while_the_file_is_retrieved() -> None:
    harness = harness_for(
        routes({QUERY: reply(success_body()), RETRIEVE: reply(failing(1000, "unknown"))})
    )
    context = PollContext(TASK_ID)

    error = await poll_error(harness, context)

    assert type(error) is TransientError
    assert context.checkpoint == {
        "file_id": FILE_ID,
        "status": "Success",
        "details": {"video_width": 1280, "video_height": 720},
    }

    resumed = harness_for(routes({RETRIEVE: reply(retrieve_body())}))  # a query would fail it
    outcome = await poll(resumed, context)

    assert outcome.result == result()
    assert outcome.raw == {"retrieve": retrieve_body()}
    assert resumed.paths == [RETRIEVE]


async def test_a_checkpoint_with_a_bad_size_still_gives_the_video() -> None:
    checkpoint = {"file_id": FILE_ID, "status": "Success", "details": {"video_width": "wide"}}
    harness = harness_for(routes({RETRIEVE: reply(retrieve_body())}))

    outcome = await poll(harness, PollContext(TASK_ID, checkpoint=checkpoint))

    assert outcome.result == result(width=None, height=None)


@pytest.mark.parametrize("file_id", [None, "", "0", 0])
async def test_success_without_file_id_is_not_ready_then_fails(file_id: Any) -> None:
    harness = harness_for(reply(success_body(file_id=file_id)))
    context = PollContext(TASK_ID)

    errors = [await poll_error(harness, context) for _ in range(RESULT_NOT_READY_POLLS)]

    assert type(errors[0]) is ResultNotReady
    assert type(errors[-1]) is TaskError
    assert errors[-1].code == "incomplete_result"
    assert harness.paths == [QUERY] * RESULT_NOT_READY_POLLS


async def test_a_file_that_never_comes_fails_the_task() -> None:
    harness = harness_for(
        routes({QUERY: reply(success_body()), RETRIEVE: reply(failing(2013, "invalid file"))})
    )
    context = PollContext(TASK_ID)

    errors = [await poll_error(harness, context) for _ in range(RESULT_NOT_READY_POLLS)]

    assert [type(e) for e in errors[:-1]] == [ResultNotReady] * (RESULT_NOT_READY_POLLS - 1)
    assert errors[-1].code == "result_unavailable"
    assert harness.paths == [QUERY] + [RETRIEVE] * RESULT_NOT_READY_POLLS


async def test_backup_download_url_and_a_schemeless_url() -> None:
    file = {"download_url": None, "backup_download_url": "cdn.minimax.test/output.mp4"}
    harness = harness_for(
        routes({QUERY: reply(success_body()), RETRIEVE: reply(retrieve_body(**file))})
    )

    outcome = await poll(harness)

    assert isinstance(outcome.result, MinimaxVideoResult)
    assert outcome.result.download_url == "https://cdn.minimax.test/output.mp4"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (query_body("Fail"), "the provider reported the task failed"),
        (query_body("failed"), "the provider reported the task failed"),
        (
            query_body("Fail", base_resp={"status_code": 0, "status_msg": "video failed"}),
            "video failed",
        ),
    ],
)
async def test_fail(body: dict[str, Any], message: str) -> None:
    harness = harness_for(reply(body))
    context = PollContext(TASK_ID)

    outcome = await poll(harness, context)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.error == {"code": "failed", "message": message}
    assert outcome.raw == body
    assert context.checkpoint is None


@pytest.mark.parametrize("status", ["Paused", "", "Cancelled"])
async def test_an_unknown_status_keeps_the_task_as_it_is(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome == PollOutcome(None, status, raw=query_body(status))
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "minimax_video",
            "upstream_status": status,
        }
    ]


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (1002, RateLimited),
        (1039, RateLimited),
        (1004, CredentialError),
        (2049, CredentialError),
        (1008, CredentialError),
        (1026, TaskError),
        (1027, TaskError),
        (2013, TaskError),
        (1000, TransientError),
        (1033, TransientError),
        (9999, TransientError),
    ],
)
async def test_base_resp_codes_with_http_200(code: int, error_type: type[ProviderError]) -> None:
    harness = harness_for(reply(failing(code, "why")))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == str(code)
    assert error.message == "why"
    assert error.raw == failing(code, "why")


async def test_rate_limit_honours_retry_after() -> None:
    harness = harness_for(reply(failing(1002, "rate limit"), headers={"Retry-After": "7"}))

    error = await poll_error(harness)

    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 7


async def test_a_key_from_the_other_region_with_http_401() -> None:
    harness = harness_for(reply(failing(2049, "invalid api key"), status=401))

    error = await poll_error(harness)

    assert type(error) is CredentialError
    assert error.code == "2049"


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        (reply(text=HTML_ERROR_PAGE, status=502), "http_502"),
        (reply(text='{"task_id": "361720188367060", "status": "Succ'), "malformed_response"),
        (reply([query_body()]), "malformed_response"),
        (reply({"status": "Success"}, status=404), "http_404"),
        (reply({"error": "busy"}, status=429), "http_429"),
        (raising(httpx.ConnectError("refused")), "connection_error"),
        (raising(httpx.ReadTimeout("slow")), "timeout"),
    ],
)
async def test_answers_that_are_no_answer_are_transient(handler: Handler, code: str) -> None:
    harness = harness_for(handler)

    error = await poll_error(harness)

    assert isinstance(error, TransientError)
    assert error.code == code


@pytest.mark.parametrize(
    "body",
    [
        {"task_id": TASK_ID, "status": 2, "file_id": "x", "base_resp": "success"},
        {"task_id": TASK_ID, "status": ["Success"], "base_resp": OK},
        {"task_id": TASK_ID, "base_resp": {"status_code": "0"}},
        {"task_id": TASK_ID, "base_resp": {"status_code": True}},
        query_body(None),
        success_body(file_id="12ab"),
        success_body(file_id=True),
    ],
)
async def test_wrong_types_are_malformed(body: dict[str, Any]) -> None:
    harness = harness_for(reply(body))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert harness.paths == [QUERY]


@pytest.mark.parametrize("task_id", ["106916112212032", 106916112212032, "0361720188367060", True])
async def test_an_answer_about_another_task_is_malformed(task_id: Any) -> None:
    harness = harness_for(reply(success_body(task_id=task_id)))
    context = PollContext(TASK_ID)

    error = await poll_error(harness, context)

    assert error.code == "malformed_response"
    assert "task_id" in error.message
    assert harness.paths == [QUERY]  # nothing of that task is retrieved for this one
    assert context.checkpoint is None


def test_result_files_are_the_video_with_its_expiry() -> None:
    adapter = MinimaxVideoAdapter()

    files = adapter.result_files(result(), NOW + timedelta(minutes=5))

    assert files == [ResultFile("video", DOWNLOAD_URL, NINE_HOURS_LATER)]


def test_a_stored_result_reads_back_as_this_model() -> None:
    stored = result().model_dump(mode="json")

    assert read_result(stored) == result()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("106916112212032", "106916112212032"),
        ("115334141465231360", "115334141465231360"),
        (106916112212032, "106916112212032"),
        ("0106916112212032", "106916112212032"),
        (str(2**63 - 1), str(2**63 - 1)),
    ],
)
def test_normalize_id_accepts_minimax_s_ids(raw: object, expected: str) -> None:
    assert MinimaxVideoAdapter().normalize_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "abc", "task-123", "12 3", "-5", "0", 0, str(2**63), 1.5, True, None, ["1"], "١٢٣"],
)
def test_normalize_id_refuses_what_is_no_video_task_id(raw: object) -> None:
    with pytest.raises(InvalidExternalId):
        MinimaxVideoAdapter().normalize_id(raw)


def test_callbacks_are_unsigned_so_the_token_url_carries_them() -> None:
    assert MinimaxVideoAdapter().callbacks is CallbackSigning.TOKEN


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # The documented status update, verbatim.
        (
            {
                "task_id": "115334141465231360",
                "status": "success",
                "file_id": "205258526306433",
                "base_resp": {"status_code": 0, "status_msg": "success"},
            },
            "115334141465231360",
        ),
        ({"task_id": "106916112212032", "status": "processing"}, "106916112212032"),
        ({"task_id": 106916112212032, "status": "failed"}, "106916112212032"),
        ({"task_id": "0106916112212032"}, "106916112212032"),
        # The URL check names no task.
        ({"challenge": "1a3cs1j-601a-118y-ch52-o48911eabc3u"}, None),
        ({}, None),
        ({"task_id": None}, None),
        ({"task_id": ""}, None),
        ({"task_id": "abc"}, None),
        ({"task_id": True}, None),
        ({"task_id": 1.5}, None),
        ({"task_id": ["106916112212032"]}, None),
        ({"data": {"task_id": "106916112212032"}}, None),
    ],
)
def test_callback_id(body: dict[str, Any], expected: str | None) -> None:
    assert MinimaxVideoAdapter().callback_id(body, {}) == expected
