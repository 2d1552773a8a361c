"""Alibaba DashScope async task adapter against every documented answer shape
(docs/providers.md, "Alibaba DashScope async tasks")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import ProviderKind
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
from app.providers.dashscope import DashscopeAdapter, DashscopeFile, DashscopeResult
from app.providers.external_ids import InvalidExternalId
from app.providers.registry import adapter_for, read_result
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

TASK_ID = "6351feef-9694-45d2-9d32-63454f2ffb8d"
BASE_URL = "https://dashscope.test"
PATH = f"/api/v1/tasks/{TASK_ID}"
NOW = datetime(2025, 2, 13, 9, 31, 22, tzinfo=UTC)
# A transcription URL as DashScope signs it (the SDK page's example), expiring before NOW + 24 h.
SIGNED_EXPIRES = int((NOW + timedelta(hours=20)).timestamp())
TRANSCRIPTION_URL = (
    "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/prod/paraformer-v2/20250213/"
    f"20ee4e4f-0404-4806-b617-c7d4c62eed19-1.json?Expires={SIGNED_EXPIRES}"
    "&OSSAccessKeyId=yourOSSAccessKeyId&Signature=3q%2B1uQmRwltd7FPn5HQM2mBKw74%3D"
)
FILE_URL = "https://dashscope.oss-cn-beijing.aliyuncs.com/samples/audio/paraformer/hello_world.wav"
OTHER_FILE_URL = "https://dashscope.oss-cn-beijing.aliyuncs.com/samples/audio/rich_text.wav"

# The Paraformer SDK page's examples, with this test's task id.
RUNNING: dict[str, Any] = {
    "request_id": "d9d530f1-853c-9848-a5f1-f5de59086ff7",
    "output": {
        "task_id": TASK_ID,
        "task_status": "RUNNING",
        "submit_time": "2025-02-13 17:31:20.681",
        "scheduled_time": "2025-02-13 17:31:20.703",
        "task_metrics": {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 0},
    },
    "usage": None,
}
SUCCEEDED_ONE: dict[str, Any] = {
    "request_id": "16668704-6702-9e03-8ab7-a32a5d7bb095",
    "output": {
        "task_id": TASK_ID,
        "task_status": "SUCCEEDED",
        "submit_time": "2025-02-13 17:31:20.681",
        "scheduled_time": "2025-02-13 17:31:20.703",
        "end_time": "2025-02-13 17:31:21.867",
        "results": [
            {
                "file_url": FILE_URL,
                "transcription_url": TRANSCRIPTION_URL,
                "subtask_status": "SUCCEEDED",
            }
        ],
        "task_metrics": {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0},
    },
    "usage": {"duration": 9},
}
DOWNLOAD_FAILED = {
    "file_url": OTHER_FILE_URL,
    "code": "InvalidFile.DownloadFailed",
    "message": "The audio file cannot be downloaded.",
    "subtask_status": "FAILED",
}
# "FAILED" in the SDK page's words: the task SUCCEEDED, its only subtask did not.
SUCCEEDED_ALL_FAILED: dict[str, Any] = {
    "request_id": "16668704-6702-9e03-8ab7-a32a5d7bb095",
    "output": {
        "task_id": TASK_ID,
        "task_status": "SUCCEEDED",
        "submit_time": "2024-12-16 16:30:59.170",
        "scheduled_time": "2024-12-16 16:30:59.204",
        "end_time": "2024-12-16 16:31:02.375",
        "results": [DOWNLOAD_FAILED],
        "task_metrics": {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 1},
    },
    "usage": {"duration": 9},
}


def answer(**output: Any) -> dict[str, Any]:
    return {
        "request_id": "7574ee8f-38a4-4d1c-a1c1-11c33ab46e51",
        "output": {"task_id": TASK_ID, **output},
    }


def refusal(code: str, message: str = "refused") -> dict[str, Any]:
    return {"request_id": "fb53c4ec-1c12-4fc4-a580-0c46b17950d1", "code": code, "message": message}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.DASHSCOPE, base_url=BASE_URL)


def adapter() -> DashscopeAdapter:
    return DashscopeAdapter(clock=lambda: NOW)


async def poll(harness: Harness, context: PollContext | None = None) -> PollOutcome:
    return await adapter().poll(harness.upstream, context or PollContext(TASK_ID))


async def poll_error(harness: Harness, context: PollContext | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, context)
    return caught.value


def transcript(url: str = TRANSCRIPTION_URL, file_url: str | None = FILE_URL) -> DashscopeFile:
    return DashscopeFile(
        status="succeeded",
        file_url=file_url,
        transcription_url=url,
        transcription_url_expires_at=datetime.fromtimestamp(SIGNED_EXPIRES, UTC),
    )


def test_registry_serves_this_adapter() -> None:
    served = adapter_for(ProviderKind.DASHSCOPE)

    assert isinstance(served, DashscopeAdapter)
    assert served.kind is ProviderKind.DASHSCOPE
    assert served.requests_per_success == 0
    assert served.callbacks is CallbackSigning.TOKEN


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(RUNNING))

    await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{PATH}"
    assert request.method == "GET"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PENDING", TaskStatus.QUEUED),
        ("SUSPENDED", TaskStatus.QUEUED),
        ("RUNNING", TaskStatus.PROCESSING),
        ("running", TaskStatus.PROCESSING),
    ],
)
async def test_running_statuses(status: str, expected: TaskStatus) -> None:
    body = {**RUNNING, "output": {**RUNNING["output"], "task_status": status}}
    context = PollContext(TASK_ID, checkpoint={"not_ready": 4})

    outcome = await poll(harness_for(reply(body)), context)

    assert outcome == PollOutcome(expected, status, raw=body)
    assert outcome.ready_at is None  # DashScope reports no queue position or ETA
    assert context.checkpoint is None  # a running answer resets the not-ready count


async def test_succeeded_file_transcription() -> None:
    outcome = await poll(harness_for(reply(SUCCEEDED_ONE)))

    expected = DashscopeResult(kind="dashscope", files=[transcript()], partial=False)
    assert outcome == PollOutcome(
        TaskStatus.SUCCEEDED, "SUCCEEDED", result=expected, raw=SUCCEEDED_ONE
    )


async def test_a_url_without_its_own_expiry_lives_24_hours_from_the_poll() -> None:
    url = "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/prod/r-1.json"
    body = answer(
        task_status="SUCCEEDED",
        results=[{"file_url": FILE_URL, "transcription_url": url, "subtask_status": "SUCCEEDED"}],
    )

    outcome = await poll(harness_for(reply(body)))

    assert isinstance(outcome.result, DashscopeResult)
    [file] = outcome.result.files
    assert file.transcription_url_expires_at == NOW + timedelta(hours=24)


async def test_succeeded_qwen_asr_has_one_result() -> None:
    body = answer(
        task_status="SUCCEEDED",
        result={"file_url": FILE_URL, "transcription_url": TRANSCRIPTION_URL},
    )

    outcome = await poll(harness_for(reply(body)))

    expected = DashscopeResult(kind="dashscope", files=[transcript()], partial=False)
    assert outcome == PollOutcome(TaskStatus.SUCCEEDED, "SUCCEEDED", result=expected, raw=body)


async def test_some_files_failed_is_a_partial_success_with_each_files_status() -> None:
    body = answer(
        task_status="SUCCEEDED",
        results=[
            {
                "file_url": FILE_URL,
                "transcription_url": TRANSCRIPTION_URL,
                "subtask_status": "SUCCEEDED",
            },
            DOWNLOAD_FAILED,
        ],
        task_metrics={"TOTAL": 2, "SUCCEEDED": 1, "FAILED": 1},
    )

    outcome = await poll(harness_for(reply(body)))

    failed = DashscopeFile(
        status="failed",
        file_url=OTHER_FILE_URL,
        code="InvalidFile.DownloadFailed",
        message="The audio file cannot be downloaded.",
    )
    expected = DashscopeResult(kind="dashscope", files=[transcript(), failed], partial=True)
    assert outcome == PollOutcome(TaskStatus.SUCCEEDED, "SUCCEEDED", result=expected, raw=body)


async def test_succeeded_with_every_file_failed_is_a_failure_with_the_files_code() -> None:
    outcome = await poll(harness_for(reply(SUCCEEDED_ALL_FAILED)))

    error = {
        "code": "InvalidFile.DownloadFailed",
        "message": "The audio file cannot be downloaded.",
    }
    assert outcome == PollOutcome(
        TaskStatus.FAILED, "SUCCEEDED", error=error, raw=SUCCEEDED_ALL_FAILED
    )


async def test_a_failed_file_without_a_code_still_fails_the_task() -> None:
    body = answer(task_status="SUCCEEDED", results=[{"subtask_status": "FAILED"}])

    outcome = await poll(harness_for(reply(body)))

    error = {"code": "failed", "message": "every file of the task failed"}
    assert outcome == PollOutcome(TaskStatus.FAILED, "SUCCEEDED", error=error, raw=body)


@pytest.mark.parametrize(
    "output",
    [
        {},  # no results at all
        {"results": []},
        {"results": [{"file_url": FILE_URL, "subtask_status": "RUNNING"}]},
        {"results": [{"file_url": FILE_URL, "subtask_status": "SUCCEEDED"}]},
        {"results": [{"subtask_status": "SUCCEEDED", "transcription_url": ""}, DOWNLOAD_FAILED]},
        {"result": {"file_url": FILE_URL}},
    ],
)
async def test_succeeded_without_every_files_result_is_not_ready(output: dict[str, Any]) -> None:
    context = PollContext(TASK_ID)

    error = await poll_error(harness_for(reply(answer(task_status="SUCCEEDED", **output))), context)

    assert isinstance(error, ResultNotReady)
    assert error.code == "result_not_ready"
    assert context.checkpoint == {"not_ready": 1}


async def test_a_result_that_never_comes_fails_the_task_after_the_bound() -> None:
    context = PollContext(TASK_ID, checkpoint={"not_ready": RESULT_NOT_READY_POLLS - 1})

    error = await poll_error(harness_for(reply(answer(task_status="SUCCEEDED"))), context)

    assert type(error) is TaskError
    assert error.code == "incomplete_result"


@pytest.mark.parametrize(
    ("output", "error"),
    [
        (
            {"code": "InternalError.Algo", "message": "An internal error occurred."},
            {"code": "InternalError.Algo", "message": "An internal error occurred."},
        ),
        ({}, {"code": "failed", "message": "DashScope reported the task failed"}),
        (
            {"code": "  ", "message": None},
            {"code": "failed", "message": "DashScope reported the task failed"},
        ),
        (
            {"results": [DOWNLOAD_FAILED]},
            {
                "code": "InvalidFile.DownloadFailed",
                "message": "The audio file cannot be downloaded.",
            },
        ),
    ],
)
async def test_failed(output: dict[str, Any], error: dict[str, Any]) -> None:
    body = answer(task_status="FAILED", **output)
    context = PollContext(TASK_ID, checkpoint={"not_ready": 3})

    outcome = await poll(harness_for(reply(body)), context)

    assert outcome == PollOutcome(TaskStatus.FAILED, "FAILED", error=error, raw=body)
    assert context.checkpoint is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "the task was canceled at DashScope"),
        ({"code": "Canceled", "message": "canceled by user"}, "canceled by user"),
    ],
)
async def test_canceled_is_a_failure(fields: dict[str, Any], message: str) -> None:
    body = answer(task_status="CANCELED", submit_time="2025-02-13 17:31:20.681", **fields)

    outcome = await poll(harness_for(reply(body)))

    error = {"code": "cancelled_upstream", "message": message}
    assert outcome == PollOutcome(TaskStatus.FAILED, "CANCELED", error=error, raw=body)


@pytest.mark.parametrize("with_id", [True, False])
async def test_unknown_is_a_task_dashscope_no_longer_has(with_id: bool) -> None:
    body = answer(task_status="UNKNOWN") if with_id else {"output": {"task_status": "UNKNOWN"}}

    outcome = await poll(harness_for(reply(body)))

    assert outcome.status is TaskStatus.EXPIRED
    assert outcome.upstream_status == "UNKNOWN"
    assert outcome.error is not None
    assert outcome.error["code"] == "unknown_task"


async def test_an_unknown_status_keeps_the_task_as_is_and_warns() -> None:
    body = answer(task_status="ARCHIVED")

    with capture_logs() as logs:
        outcome = await poll(harness_for(reply(body)))

    assert outcome == PollOutcome(None, "ARCHIVED", raw=body)
    assert {"event": "provider.unknown_status", "kind": "dashscope"}.items() <= logs[0].items()


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code"),
    [
        (
            401,
            refusal("InvalidApiKey", "Invalid API-key provided."),
            CredentialError,
            "InvalidApiKey",
        ),
        (401, refusal("InvalidApiKey", "No API-key provided."), CredentialError, "InvalidApiKey"),
        (
            400,
            refusal(
                "Arrearage", "Access denied, please make sure your account is in good standing."
            ),
            CredentialError,
            "Arrearage",
        ),
        (403, refusal("AccessDenied.Unpurchased"), CredentialError, "AccessDenied.Unpurchased"),
        (403, refusal("Workspace.AccessDenied"), CredentialError, "Workspace.AccessDenied"),
        (400, refusal("InvalidParameter", "task_id is invalid"), TaskError, "InvalidParameter"),
        (500, refusal("InternalError"), TransientError, "InternalError"),
        (503, refusal("ServiceUnavailable"), TransientError, "ServiceUnavailable"),
        (400, refusal("SomethingNew"), TransientError, "SomethingNew"),
        (404, refusal("NotFound"), TransientError, "NotFound"),
    ],
)
async def test_refusals_are_classified_by_their_code(
    status: int, body: dict[str, Any], error_class: type[ProviderError], code: str
) -> None:
    error = await poll_error(harness_for(reply(body, status=status)))

    assert type(error) is error_class
    assert error.code == code
    assert error.message == body["message"]
    assert error.raw == body


@pytest.mark.parametrize(
    ("code", "headers", "retry_after"),
    [
        ("Throttling.RateQuota", None, None),
        ("Throttling.RateQuota", {"Retry-After": "7"}, 7.0),
        ("Throttling.AllocationQuota", None, None),
        ("Throttling", None, None),
    ],
)
async def test_throttling_slows_the_instance(
    code: str, headers: dict[str, str] | None, retry_after: float | None
) -> None:
    body = refusal(code, "Requests rate limit exceeded, please try again later.")

    error = await poll_error(harness_for(reply(body, status=429, headers=headers)))

    assert isinstance(error, RateLimited)
    assert error.code == code
    assert error.retry_after_s == retry_after


@pytest.mark.parametrize(
    ("status", "text", "error_class", "code"),
    [
        (429, "Too Many Requests", RateLimited, "http_429"),
        (401, "", CredentialError, "http_401"),
        (502, HTML_ERROR_PAGE, TransientError, "http_502"),
        (404, '{"message": "no code"}', TransientError, "http_404"),
        (302, "", TransientError, "http_302"),
        (200, HTML_ERROR_PAGE, TransientError, "malformed_response"),
        (200, "[]", TransientError, "malformed_response"),
    ],
)
async def test_answers_without_a_dashscope_body(
    status: int, text: str, error_class: type[ProviderError], code: str
) -> None:
    error = await poll_error(harness_for(reply(status=status, text=text)))

    assert type(error) is error_class
    assert error.code == code


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "x"},
        {"request_id": "x", "output": [{"task_status": "SUCCEEDED"}]},
        {"request_id": "x", "output": {"task_id": TASK_ID, "task_status": 2}},
        answer(task_status=None),
        answer(task_status="SUCCEEDED", results={"transcription_url": TRANSCRIPTION_URL}),
        answer(task_status="SUCCEEDED", results=["SUCCEEDED"]),
        answer(task_status="SUCCEEDED", results=[{"transcription_url": TRANSCRIPTION_URL}]),
        answer(task_status="SUCCEEDED", result="https://example.com/r.json"),
        answer(
            task_status="SUCCEEDED",
            results=[{"subtask_status": "SUCCEEDED", "transcription_url": "ftp://x/r.json"}],
        ),
        answer(
            task_status="SUCCEEDED",
            results=[{"subtask_status": "SUCCEEDED", "transcription_url": 7}],
        ),
    ],
)
async def test_malformed_and_mistyped_answers_are_transient(body: dict[str, Any]) -> None:
    context = PollContext(TASK_ID)

    error = await poll_error(harness_for(reply(body)), context)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert context.checkpoint is None


@pytest.mark.parametrize("task_id", ["7bac899c-06ec-4a79-8875-0c46b17950d1", 6351, ["x"], ""])
async def test_an_answer_about_another_task_is_malformed(task_id: Any) -> None:
    body = {**SUCCEEDED_ONE, "output": {**SUCCEEDED_ONE["output"], "task_id": task_id}}

    error = await poll_error(harness_for(reply(body)))

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert "the answer is for task_id" in error.message


async def test_the_answers_id_is_compared_in_its_canonical_case() -> None:
    body = answer(task_status="RUNNING")
    body["output"]["task_id"] = TASK_ID.upper()

    outcome = await poll(harness_for(reply(body)))

    assert outcome.status is TaskStatus.PROCESSING


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectError("refused"), "connection_error"),
        (httpx.ReadTimeout("slow"), "timeout"),
    ],
)
async def test_network_failures_are_transient(exc: Exception, code: str) -> None:
    error = await poll_error(harness_for(raising(exc)))

    assert type(error) is TransientError
    assert error.code == code


@pytest.mark.parametrize("stored", ["../..", "not-a-uuid", TASK_ID + "/x"])
async def test_a_stored_id_that_is_no_task_id_fails_the_task_unsent(stored: str) -> None:
    harness = harness_for(reply(RUNNING))

    error = await poll_error(harness, PollContext(stored))

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert harness.requests == []


# --- Ids, callbacks, result files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TASK_ID, TASK_ID),
        (TASK_ID.upper(), TASK_ID),
        ("a8532587-0c46-4b17-950d-1c46b17950d1", "a8532587-0c46-4b17-950d-1c46b17950d1"),
    ],
)
def test_normalize_id_accepts_task_ids(raw: object, expected: str) -> None:
    assert DashscopeAdapter().normalize_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        6351,
        None,
        ["x"],
        True,
        "",
        "task-1",
        f" {TASK_ID}",
        f"{TASK_ID}\n",
        f"{{{TASK_ID}}}",
        TASK_ID.replace("-", ""),
        TASK_ID + "0",
        TASK_ID[:-1] + "g",
        "../" + TASK_ID,
        "a8532587-xxxx-xxxx-xxxx-0c46b17950d1",
    ],
)
def test_normalize_id_refuses_anything_else(raw: object) -> None:
    with pytest.raises(InvalidExternalId):
        DashscopeAdapter().normalize_id(raw)


def event(**overrides: Any) -> dict[str, Any]:
    """The task-finish event EventBridge posts, as Model Studio's page shows it."""
    body: dict[str, Any] = {
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": "123456789098",
        "aliyunpublishtime": "2023-10-25T01:45:16.993Z",
        "data": {
            "start_time": "2023-10-25 09:45:09",
            "user_api_unique_key": "apikey:v1:audio:asr:transcription:paraformer-8k-v1",
            "task_status": "SUCCEEDED",
            "contain_result": False,
            "end_time": "2023-10-25 09:45:16",
            "task_id": TASK_ID,
            "region": "cn-beijing",
            "request_id": "108f38f5-4c1b-4c44-9d52-6504db9080b3",
            "api_key_id": "1250",
        },
        "specversion": "1.0",
        "aliyuneventbusname": "default",
        "id": "81765e5b-2f1e-4b5a-b13a-bbad8dde2bd9",
        "source": "acs.dashscope",
        "time": "2023-10-25T01:45:16.969Z",
        "aliyunregionid": "cn-beijing",
        "type": "dashscope:System:AsyncTaskFinish",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (event(), TASK_ID),
        (event(data={"task_id": TASK_ID.upper(), "task_status": "FAILED"}), TASK_ID),
        (event(source="acs.eventbridge"), None),
        (event(type="dashscope:System:AsyncTaskStart"), None),
        (event(data=None), None),
        (event(data=[TASK_ID]), None),
        (event(data={"task_status": "SUCCEEDED"}), None),
        (event(data={"task_id": 6351}), None),
        (event(data={"task_id": "../x"}), None),
        ({"task_id": TASK_ID}, None),
        ({}, None),
    ],
)
def test_callback_id(body: dict[str, Any], expected: str | None) -> None:
    assert DashscopeAdapter().callback_id(body, {}) == expected


def test_result_files_are_the_succeeded_transcripts_with_their_expiry() -> None:
    failed = DashscopeFile(
        status="failed", file_url=OTHER_FILE_URL, code="InvalidFile.DownloadFailed"
    )
    result = DashscopeResult(kind="dashscope", files=[failed, transcript()], partial=True)

    files = DashscopeAdapter().result_files(result, NOW)

    assert files == [
        ResultFile("subtitle", TRANSCRIPTION_URL, datetime.fromtimestamp(SIGNED_EXPIRES, UTC))
    ]


def test_the_stored_result_reads_back_as_its_model() -> None:
    result = DashscopeResult(kind="dashscope", files=[transcript()], partial=False)

    stored = result.model_dump(mode="json")

    assert stored["kind"] == "dashscope"
    assert stored["files"][0]["status"] == "succeeded"
    assert read_result(stored) == result
