"""fal queue adapter against its documented answer shapes (docs/providers.md, "fal queue")."""

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
from app.providers.external_ids import InvalidExternalId
from app.providers.fal import MEDIA_URL_LIFETIME, FalAdapter, FalFile, FalResult
from app.providers.registry import adapter_for, normalize_external_id, read_result
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

REQUEST_ID = "80e732af-660e-45cd-bd63-580e4f2a94cc"
MODEL = "fal-ai/minimax-music"
TASK_ID = f"{MODEL}/{REQUEST_ID}"
BASE_URL = "https://queue.fal.test"
REQUESTS = f"/{MODEL}/requests/{REQUEST_ID}"
STATUS_PATH = f"{REQUESTS}/status"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AUDIO_URL = "https://v3.fal.media/files/rabbit/YYbm6L_output.mp3"

# The queue page's examples, with this request's URLs.
URLS = {
    "response_url": f"https://queue.fal.run{REQUESTS}",
    "status_url": f"https://queue.fal.run{STATUS_PATH}",
    "cancel_url": f"https://queue.fal.run{REQUESTS}/cancel",
}
IN_QUEUE: dict[str, Any] = {"status": "IN_QUEUE", "queue_position": 2, **URLS}
IN_PROGRESS: dict[str, Any] = {"status": "IN_PROGRESS", "logs": None, **URLS}
COMPLETED: dict[str, Any] = {
    "status": "COMPLETED",
    "logs": None,
    "metrics": {"inference_time": 4.2},
    **URLS,
}
AUDIO = {
    "url": AUDIO_URL,
    "content_type": "audio/mpeg",
    "file_name": "output.mp3",
    "file_size": 1824075,
}
OUTPUT: dict[str, Any] = {"audio": AUDIO}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.FAL, base_url=BASE_URL)


def answers(status: Any = None, result: Any = None, **more: Handler) -> Handler:
    """The status route answering `status`, the result route `result`; each a handler."""
    table = {STATUS_PATH: status, REQUESTS: result, **more}

    def handler(request: httpx.Request) -> httpx.Response:
        route = table.get(request.url.path)
        assert route is not None, f"unexpected request to {request.url.path}"
        response: httpx.Response = route(request)
        return response

    return handler


async def poll(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> PollOutcome:
    adapter = FalAdapter(clock=lambda: NOW)
    return await adapter.poll(harness.upstream, context or PollContext(task_id))


async def poll_error(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, task_id, context)
    return caught.value


def result(files: list[FalFile], output: dict[str, Any]) -> FalResult:
    return FalResult(kind="fal", model=MODEL, request_id=REQUEST_ID, files=files, output=output)


AUDIO_FILE = FalFile(
    field="audio",
    url=AUDIO_URL,
    content_type="audio/mpeg",
    file_name="output.mp3",
    file_size=1824075,
)


def test_registry_serves_this_adapter() -> None:
    adapter = adapter_for(ProviderKind.FAL)

    assert isinstance(adapter, FalAdapter)
    assert adapter.kind is ProviderKind.FAL
    assert adapter.requests_per_success == 1
    assert adapter.auth_headers("k-1:s") == {"Authorization": "Key k-1:s"}


# ---------------------------------------------------------------------------------------------
# Ids


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (TASK_ID, TASK_ID),
        (f"{MODEL}/{REQUEST_ID.upper()}", TASK_ID),
        # The endpoint's sub-path is the submit URL's, never the status and result URLs'.
        (f"fal-ai/minimax/speech-02-hd/{REQUEST_ID}", f"fal-ai/minimax/{REQUEST_ID}"),
        (f"fal-ai/flux/v1.1/pro/{REQUEST_ID}", f"fal-ai/flux/{REQUEST_ID}"),
        (f"workflows/someone/my-flow/{REQUEST_ID}", f"workflows/someone/my-flow/{REQUEST_ID}"),
        (f"comfy/someone/flow/sub/{REQUEST_ID}", f"comfy/someone/flow/{REQUEST_ID}"),
        (f"110602490/lora/{REQUEST_ID}", f"110602490/lora/{REQUEST_ID}"),
        # UUIDv7, as fal's newer request ids are.
        (
            "fal-ai/f5-tts/019d9e0b-6eb0-7920-827a-868d042ec76e",
            "fal-ai/f5-tts/019d9e0b-6eb0-7920-827a-868d042ec76e",
        ),
    ],
)
def test_normalize_id(raw: str, canonical: str) -> None:
    assert normalize_external_id(ProviderKind.FAL, raw) == canonical


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (REQUEST_ID, "must be <owner>/<app>/<request_id>"),
        (f"fal-ai/{REQUEST_ID}", "must be <owner>/<app>/<request_id>"),
        (f"workflows/someone/{REQUEST_ID}", "must be <owner>/<app>/<request_id>"),
        (f"{MODEL}/not-a-uuid", "request_id 'not-a-uuid' must be a UUID"),
        (f"{MODEL}/{REQUEST_ID.replace('-', '')}", "must be a UUID"),
        (f"{MODEL}/{{{REQUEST_ID}}}", "must be a UUID"),
        (f"{MODEL}/{REQUEST_ID}/", "must be a UUID"),
        (f"fal-ai/../{REQUEST_ID}", "model segment '..' must not consist of dots only"),
        (f"./app/{REQUEST_ID}", "model segment '.' must not consist of dots only"),
        (f"fal-ai//{REQUEST_ID}", "model segment '' must not be empty"),
        (f"/fal-ai/app/{REQUEST_ID}", "model segment '' must not be empty"),
        (f"fal-ai/a\\b/{REQUEST_ID}", "must not contain '/' or '\\'"),
        (f"fal-ai/a b/{REQUEST_ID}", "must not contain space characters"),
        (f"fal-ai/app\u202e/{REQUEST_ID}", "must not contain format characters"),
        (f"fal-ai/a%2e/{REQUEST_ID}", "must be 1-100 characters of A-Z a-z 0-9 . _ -"),
        (f"fal-ai/a?b/{REQUEST_ID}", "must be 1-100 characters"),
        (f"fal-ai/.hidden/{REQUEST_ID}", "starting with a letter or digit"),
        (f"fal-ai/{'a' * 101}/{REQUEST_ID}", "must be 1-100 characters"),
        ("x/" * 120 + REQUEST_ID, "must be at most 256 characters"),
        ("", "must not be empty"),
        (12345, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_normalize_id_refuses(raw: object, reason: str) -> None:
    with pytest.raises(InvalidExternalId) as refused:
        normalize_external_id(ProviderKind.FAL, raw)

    assert reason in str(refused.value)


@pytest.mark.parametrize(
    "task_id",
    [
        f"fal-ai/../{REQUEST_ID}",
        f"fal-ai/minimax/speech-02-hd/{REQUEST_ID}",  # not canonical: the sub-path is kept
        f"{MODEL}/{REQUEST_ID.upper()}",
        REQUEST_ID,
        f"{MODEL}/{REQUEST_ID}?x=1",
    ],
)
async def test_a_stored_id_that_is_not_canonical_fails_the_task_unsent(task_id: str) -> None:
    harness = harness_for(answers(reply(COMPLETED), reply(OUTPUT)))

    error = await poll_error(harness, task_id)

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert harness.requests == []
    assert harness.slots == 0


# ---------------------------------------------------------------------------------------------
# Callbacks


def test_callbacks_are_unsigned_for_pollhook_and_name_no_task() -> None:
    adapter = FalAdapter()

    assert adapter.callbacks is CallbackSigning.TOKEN


@pytest.mark.parametrize(
    "body",
    [
        # fal's documented webhook bodies: the request_id, never the model.
        {
            "request_id": REQUEST_ID,
            "gateway_request_id": REQUEST_ID,
            "status": "OK",
            "payload": OUTPUT,
        },
        {
            "request_id": REQUEST_ID,
            "gateway_request_id": REQUEST_ID,
            "status": "ERROR",
            "error": "Invalid status code: 422",
            "payload": {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]},
        },
        {"request_id": REQUEST_ID, "status": "OK", "payload": None, "payload_error": "x"},
        {"request_id": TASK_ID, "status": "OK"},
        {},
    ],
)
def test_callback_id_names_no_task_without_the_model(body: dict[str, Any]) -> None:
    assert FalAdapter().callback_id(body, {}) is None


# ---------------------------------------------------------------------------------------------
# Statuses


async def test_status_request_is_exact() -> None:
    harness = harness_for(answers(reply(IN_PROGRESS, status=202)))

    outcome = await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{STATUS_PATH}"
    assert request.headers["Authorization"] == f"Key {API_KEY}"
    assert outcome == PollOutcome(TaskStatus.PROCESSING, "IN_PROGRESS", raw=IN_PROGRESS)
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("position", "ready_at"),
    [
        (0, NOW + timedelta(seconds=10)),
        (2, NOW + timedelta(seconds=30)),
        (None, None),
        (-1, None),
        ("3", None),
        (True, None),
        (10**12, NOW + timedelta(seconds=10 * 100_001)),
    ],
)
async def test_in_queue_reports_its_position_as_ready_at(
    position: Any, ready_at: datetime | None
) -> None:
    body = {**IN_QUEUE, "queue_position": position}
    harness = harness_for(answers(reply(body, status=202)))

    outcome = await poll(harness)

    assert outcome == PollOutcome(TaskStatus.QUEUED, "IN_QUEUE", raw=body, ready_at=ready_at)


@pytest.mark.parametrize("http_status", [200, 202])
@pytest.mark.parametrize(
    ("status", "expected"),
    [("IN_QUEUE", TaskStatus.QUEUED), ("IN_PROGRESS", TaskStatus.PROCESSING)],
)
async def test_running_statuses_either_http_status(
    http_status: int, status: str, expected: TaskStatus
) -> None:
    harness = harness_for(answers(reply({"status": status}, status=http_status)))

    outcome = await poll(harness)

    assert outcome.status is expected
    assert outcome.upstream_status == status


async def test_completed_takes_the_result() -> None:
    harness = harness_for(answers(reply(COMPLETED), reply(OUTPUT)))
    context = PollContext(TASK_ID)

    outcome = await poll(harness, context=context)

    assert outcome == PollOutcome(
        TaskStatus.SUCCEEDED,
        "COMPLETED",
        result=result([AUDIO_FILE], OUTPUT),
        raw={"status": COMPLETED, "result": OUTPUT},
    )
    assert harness.paths == [STATUS_PATH, REQUESTS]
    assert str(harness.requests[1].url) == f"{BASE_URL}{REQUESTS}"
    assert harness.requests[1].headers["Authorization"] == f"Key {API_KEY}"
    assert harness.slots == 2
    assert context.checkpoint == {"completed": "COMPLETED"}


@pytest.mark.parametrize(
    ("output", "files"),
    [
        ({"audio_file": AUDIO, "seed": 7}, [AUDIO_FILE.model_copy(update={"field": "audio_file"})]),
        (
            {"audios": [AUDIO, {"url": "https://v3.fal.media/files/b.wav"}]},
            [
                AUDIO_FILE.model_copy(update={"field": "audios[0]"}),
                FalFile(field="audios[1]", url="https://v3.fal.media/files/b.wav"),
            ],
        ),
        (
            {"result": {"audio": AUDIO, "subtitles": {"url": "https://x.test/s.srt"}}},
            [
                AUDIO_FILE.model_copy(update={"field": "result.audio"}),
                FalFile(field="result.subtitles", url="https://x.test/s.srt"),
            ],
        ),
        # A transcript has no file; `data:` URIs (sync mode) and other shapes are output only.
        ({"text": "hello", "chunks": [{"timestamp": [0, 1], "text": "hello"}]}, []),
        ({"audio": {"url": "data:audio/mpeg;base64,AAAA"}}, []),
        ({"audio_url": AUDIO_URL, "audio": {"url": 7}}, []),
        # Fields fal gives with the wrong type are dropped, not the file.
        (
            {"audio": {"url": AUDIO_URL, "content_type": 3, "file_name": [], "file_size": "9"}},
            [FalFile(field="audio", url=AUDIO_URL)],
        ),
        (
            {"audio": {**AUDIO, "file_size": True}},
            [AUDIO_FILE.model_copy(update={"file_size": None})],
        ),
    ],
)
async def test_every_file_in_the_output_is_listed(
    output: dict[str, Any], files: list[FalFile]
) -> None:
    harness = harness_for(answers(reply(COMPLETED), reply(output)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.result == result(files, output)


async def test_a_result_survives_storage_as_its_kind() -> None:
    stored = result([AUDIO_FILE], OUTPUT).model_dump(mode="json")

    assert read_result(stored) == result([AUDIO_FILE], OUTPUT)


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        (AUDIO_FILE, "audio"),
        (FalFile(field="a", url="https://x.test/a.bin", content_type="audio/wav; x=1"), "audio"),
        (FalFile(field="s", url="https://x.test/s.srt"), "subtitle"),
        (FalFile(field="s", url="https://x.test/s", content_type="text/vtt"), "subtitle"),
        (FalFile(field="i", url="https://x.test/i.png", content_type="image/png"), "extra"),
        (FalFile(field="j", url="https://x.test/t.json"), "extra"),
    ],
)
def test_result_files_are_every_file_with_its_expiry(file: FalFile, kind: str) -> None:
    files = FalAdapter().result_files(result([file], {}), NOW)

    assert files == [ResultFile(kind, file.url, NOW + MEDIA_URL_LIFETIME)]


def test_a_url_that_says_it_dies_sooner_is_copied_by_then() -> None:
    soon = int((NOW + timedelta(minutes=5)).timestamp())
    url = f"https://x.test/a.mp3?expires={soon}"

    [file] = FalAdapter().result_files(result([FalFile(field="audio", url=url)], {}), NOW)

    assert file.expires_at == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {**COMPLETED, "error": "Request timed out", "error_type": "request_timeout"},
            "request_timeout",
            "Request timed out",
        ),
        ({**COMPLETED, "error": "Runner crashed"}, "failed", "Runner crashed"),
        (
            {**COMPLETED, "error_type": "client_cancelled"},
            "client_cancelled",
            "fal reported client_cancelled",
        ),
        (
            {**COMPLETED, "error": " ", "error_type": "runner_disconnected"},
            "runner_disconnected",
            "fal reported runner_disconnected",
        ),
    ],
)
async def test_completed_with_an_error_fails_without_asking_for_the_result(
    body: dict[str, Any], code: str, message: str
) -> None:
    harness = harness_for(answers(reply(body)))
    context = PollContext(TASK_ID)

    outcome = await poll(harness, context=context)

    assert outcome == PollOutcome(
        TaskStatus.FAILED, "COMPLETED", error={"code": code, "message": message}, raw=body
    )
    assert harness.paths == [STATUS_PATH]
    assert context.checkpoint is None


@pytest.mark.parametrize(
    ("status", "code"),
    [("FAILED", "failed"), ("CANCELED", "cancelled_upstream"), ("cancelled", "cancelled_upstream")],
)
async def test_statuses_outside_the_docs_that_end_a_request(status: str, code: str) -> None:
    harness = harness_for(answers(reply({"status": status})))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.error == {"code": code, "message": f"fal reported {status}"}


@pytest.mark.parametrize("status", ["PAUSED", "", "completed_partially"])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    body = {"status": status}
    harness = harness_for(answers(reply(body, status=202)))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome == PollOutcome(None, status, raw=body)
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "fal",
            "upstream_status": status,
        }
    ]


# ---------------------------------------------------------------------------------------------
# The result, resumed alone


@pytest.mark.parametrize(
    "failure",
    [
        reply(text=HTML_ERROR_PAGE, status=502),
        reply({"detail": "Too many requests"}, status=429),
        raising(httpx.ReadTimeout("slow")),
        reply(text='{"audio": {"url": "https://v3.fal.media/fi', status=200),
    ],
)
async def test_a_failed_result_get_is_retried_alone(failure: Handler) -> None:
    context = PollContext(TASK_ID)
    first = harness_for(answers(reply(COMPLETED), failure))

    await poll_error(first, context=context)

    assert context.checkpoint == {"completed": "COMPLETED"}
    second = harness_for(answers(result=reply(OUTPUT)))
    outcome = await poll(second, context=context)

    assert second.paths == [REQUESTS]
    assert outcome == PollOutcome(
        TaskStatus.SUCCEEDED,
        "COMPLETED",
        result=result([AUDIO_FILE], OUTPUT),
        raw={"result": OUTPUT},
    )


@pytest.mark.parametrize("checkpoint", [{"completed": ""}, {"completed": 1}, {"file_id": "1"}])
async def test_a_checkpoint_it_did_not_write_asks_for_the_status_again(
    checkpoint: dict[str, Any],
) -> None:
    harness = harness_for(answers(reply(IN_PROGRESS, status=202)))

    outcome = await poll(harness, context=PollContext(TASK_ID, checkpoint=checkpoint))

    assert outcome.status is TaskStatus.PROCESSING
    assert harness.paths == [STATUS_PATH]


@pytest.mark.parametrize("http_status", [202, 404])
async def test_a_result_not_there_is_waited_for_then_fails(http_status: int) -> None:
    context = PollContext(TASK_ID)
    harness = harness_for(
        answers(reply(COMPLETED), reply({"detail": "Not found"}, status=http_status))
    )
    error = await poll_error(harness, context=context)
    assert type(error) is ResultNotReady

    for _ in range(RESULT_NOT_READY_POLLS - 2):
        error = await poll_error(harness, context=context)
        assert type(error) is ResultNotReady
    error = await poll_error(harness, context=context)

    assert type(error) is TaskError
    assert error.code == "result_unavailable"
    assert harness.paths.count(STATUS_PATH) == 1


@pytest.mark.parametrize(
    ("http_status", "body", "headers", "error"),
    [
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]},
            {},
            {"code": "missing", "message": "body.prompt: field required"},
        ),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": "blocked",
                        "type": "content_policy_violation",
                    }
                ]
            },
            {"X-Fal-Error-Type": "content_policy_violation"},
            {"code": "content_policy_violation", "message": "body.prompt: blocked"},
        ),
        (
            400,
            {"detail": "Malformed request", "error_type": "bad_request"},
            {"X-Fal-Error-Type": "bad_request"},
            {"code": "bad_request", "message": "Malformed request"},
        ),
        (
            499,
            {"detail": "Client cancelled"},
            {"X-Fal-Error-Type": "client_cancelled"},
            {"code": "client_cancelled", "message": "Client cancelled"},
        ),
        (400, None, {}, {"code": "http_400", "message": "the result answered HTTP 400"}),
        (422, {"detail": []}, {}, {"code": "http_422", "message": "the result answered HTTP 422"}),
    ],
)
async def test_the_models_error_on_the_result_fails_the_task(
    http_status: int, body: Any, headers: dict[str, str], error: dict[str, Any]
) -> None:
    handler = (
        reply(text="Bad Request", status=http_status, headers=headers)
        if body is None
        else reply(body, status=http_status, headers=headers)
    )
    harness = harness_for(answers(reply(COMPLETED), handler))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.upstream_status == "COMPLETED"
    assert outcome.error == error
    assert outcome.raw["status"] == COMPLETED


@pytest.mark.parametrize(
    ("http_status", "error_type", "code"),
    [
        (401, CredentialError, "http_401"),
        (403, CredentialError, "http_403"),
        (500, TransientError, "http_500"),
        (503, TransientError, "http_503"),
        (302, TransientError, "http_302"),
    ],
)
async def test_the_result_gets_the_shared_http_rules(
    http_status: int, error_type: type[ProviderError], code: str
) -> None:
    harness = harness_for(answers(reply(COMPLETED), reply({"detail": "x"}, status=http_status)))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code


@pytest.mark.parametrize("text", ['["a"]', "", HTML_ERROR_PAGE])
async def test_a_result_that_is_not_a_json_object_is_malformed(text: str) -> None:
    harness = harness_for(answers(reply(COMPLETED), reply(text=text)))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"


# ---------------------------------------------------------------------------------------------
# Errors on the status


@pytest.mark.parametrize(
    ("body", "http_status", "headers", "error_type", "code"),
    [
        ({"detail": "Too many requests"}, 429, {"Retry-After": "20"}, RateLimited, "http_429"),
        ({"detail": "Unauthorized"}, 401, {}, CredentialError, "http_401"),
        ({"detail": "Forbidden"}, 403, {}, CredentialError, "http_403"),
        ({"detail": "Request timed out"}, 408, {}, TransientError, "http_408"),
        (
            {"detail": "No runner", "error_type": "runner_scheduling_failure"},
            503,
            {"X-Fal-Error-Type": "runner_scheduling_failure"},
            TransientError,
            "http_503",
        ),
        # An unknown request or model: not documented, so transient (the deadline bounds it).
        ({"detail": "Request not found"}, 404, {}, TransientError, "http_404"),
        ({"detail": [{"loc": ["path"], "msg": "bad"}]}, 422, {}, TransientError, "http_422"),
        (IN_PROGRESS, 201, {}, TransientError, "http_201"),
    ],
)
async def test_http_errors_on_the_status(
    body: Any,
    http_status: int,
    headers: dict[str, str],
    error_type: type[ProviderError],
    code: str,
) -> None:
    harness = harness_for(answers(reply(body, status=http_status, headers=headers)))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 20.0
    assert harness.paths == [STATUS_PATH]


async def test_a_rate_limit_without_retry_after_leaves_the_pause_to_the_engine() -> None:
    harness = harness_for(answers(reply({"detail": "Too many requests"}, status=429)))

    error = await poll_error(harness)

    assert type(error) is RateLimited
    assert error.retry_after_s is None


@pytest.mark.parametrize(
    ("http_status", "text", "code"),
    [
        (502, HTML_ERROR_PAGE, "http_502"),
        (200, HTML_ERROR_PAGE, "malformed_response"),
        (
            202,
            '{"status": "IN_PROGRESS", "response_url": "https://queue.fal.run/fal-ai/',
            "malformed_response",
        ),
        (200, '[{"status": "COMPLETED"}]', "malformed_response"),
        (200, "", "malformed_response"),
    ],
)
async def test_bodies_that_are_not_json_objects(http_status: int, text: str, code: str) -> None:
    harness = harness_for(answers(reply(text=text, status=http_status)))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == code


OTHER_ID = "0a1b2c3d-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "body",
    [
        {"status": 3, "queue_position": "1"},
        {"status": ["COMPLETED"]},
        {"status": None},
        {"queue_position": 0},
        # An answer naming another request is not this one's.
        {**COMPLETED, "response_url": f"https://queue.fal.run/{MODEL}/requests/{OTHER_ID}"},
        {**IN_QUEUE, "status_url": f"https://queue.fal.run/{MODEL}/requests/{OTHER_ID}/status"},
        {**COMPLETED, "request_id": OTHER_ID},
        {**COMPLETED, "request_id": 7},
        {**COMPLETED, "response_url": 7},
    ],
)
async def test_wrong_shapes_and_other_requests_are_malformed(body: dict[str, Any]) -> None:
    harness = harness_for(answers(reply(body), reply(OUTPUT)))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert harness.paths == [STATUS_PATH]


async def test_an_answer_naming_this_request_in_any_case_is_its_own() -> None:
    body = {**COMPLETED, "request_id": REQUEST_ID.upper()}
    harness = harness_for(answers(reply(body), reply(OUTPUT)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("exc", "code"),
    [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "connection_error")],
)
async def test_network_failures(exc: Exception, code: str) -> None:
    harness = harness_for(raising(exc))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == code
    assert harness.slots == 1


def test_callback_id_takes_the_model_from_the_url_handed_to_fal() -> None:
    body = {"request_id": REQUEST_ID.upper(), "status": "OK", "payload": {}}
    adapter = FalAdapter()
    assert adapter.callback_id(body, {"model": "fal-ai/minimax-music"}) == (
        f"fal-ai/minimax-music/{REQUEST_ID}"
    )
    for model in ("../x", "fal-ai", "fal ai/x", ""):
        assert adapter.callback_id(body, {"model": model}) is None
