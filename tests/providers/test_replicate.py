"""Replicate adapter against every documented answer shape (docs/providers.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import KIND_DEFAULTS, ProviderKind
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
from app.providers.registry import adapter_for, read_result
from app.providers.replicate import ReplicateAdapter, ReplicateResult
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

TASK_ID = "gm3qorzdhgbfurvjtvhg6dckhu"
BASE_URL = "https://api.replicate.test"
PATH = f"/v1/predictions/{TASK_ID}"
NOW = datetime(2023, 9, 8, 16, 30, tzinfo=UTC)
AUDIO = "https://replicate.delivery/pbxt/abc/out-0.wav"

# The prediction object of Replicate's "Predictions" page, verbatim but for its output.
SUCCEEDED: dict[str, Any] = {
    "id": TASK_ID,
    "model": "replicate/hello-world",
    "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
    "input": {"text": "Alice"},
    "logs": "",
    "output": AUDIO,
    "error": None,
    "status": "succeeded",
    "created_at": "2023-09-08T16:19:34.765994Z",
    "data_removed": False,
    "started_at": "2023-09-08T16:19:34.779176Z",
    "completed_at": "2023-09-08T16:19:34.791859Z",
    "metrics": {"predict_time": 0.012683, "total_time": 0.025366},
    "urls": {
        "cancel": f"https://api.replicate.com/v1/predictions/{TASK_ID}/cancel",
        "get": f"https://api.replicate.com/v1/predictions/{TASK_ID}",
    },
}
COMPLETED_AT = datetime(2023, 9, 8, 16, 19, 34, 791859, tzinfo=UTC)


def prediction(**fields: Any) -> dict[str, Any]:
    return {**SUCCEEDED, **fields}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.REPLICATE, base_url=BASE_URL)


async def poll(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> PollOutcome:
    adapter = ReplicateAdapter(clock=lambda: NOW)
    return await adapter.poll(harness.upstream, context or PollContext(task_id))


async def poll_error(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, task_id, context)
    return caught.value


async def result_of(output: Any, **fields: Any) -> ReplicateResult:
    outcome = await poll(harness_for(reply(prediction(output=output, **fields))))
    assert outcome.status is TaskStatus.SUCCEEDED
    assert isinstance(outcome.result, ReplicateResult)
    return outcome.result


def test_registry_serves_this_adapter_with_its_documented_defaults() -> None:
    adapter = adapter_for(ProviderKind.REPLICATE)

    assert isinstance(adapter, ReplicateAdapter)
    assert adapter.requests_per_success == 0
    assert adapter.callbacks is CallbackSigning.STANDARD_WEBHOOKS
    defaults = KIND_DEFAULTS[ProviderKind.REPLICATE]
    assert (defaults["base_url"], defaults["rate_limit_per_s"]) == ("https://api.replicate.com", 50)


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(prediction(status="processing", output=None)))

    outcome = await poll(harness)

    [request] = harness.requests
    assert (request.method, str(request.url)) == ("GET", f"{BASE_URL}{PATH}")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert harness.slots == 1
    # Replicate reports no queue position or ETA: the learned estimate stands.
    assert outcome.ready_at is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TASK_ID, TASK_ID),
        ("qz7mfxlkw3vdpygt1o8hbnsuae", "qz7mfxlkw3vdpygt1o8hbnsuae"),
        ("ABC123", "ABC123"),
        ("a" * 64, "a" * 64),
    ],
)
def test_normalize_id_accepts(raw: object, expected: str) -> None:
    assert ReplicateAdapter().normalize_id(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (12345, "must be a string"),
        (None, "must be a string"),
        ("", "must not be empty"),
        ("a" * 65, "at most 64"),
        ("..", "letters and digits"),
        ("gm3q/cancel", "letters and digits"),
        ("gm3q-orzd", "letters and digits"),
        ("gm3q orzd", "letters and digits"),
        ("gm3q\u0665", "letters and digits"),  # an Arabic-Indic digit is not ASCII
        ("gm3q%2F", "letters and digits"),
    ],
)
def test_normalize_id_refuses(raw: object, reason: str) -> None:
    with pytest.raises(InvalidExternalId, match=reason):
        ReplicateAdapter().normalize_id(raw)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (SUCCEEDED, TASK_ID),
        ({"id": TASK_ID, "status": "starting", "output": None}, TASK_ID),
        ({"id": "gm3q/../x"}, None),
        ({"id": 12345}, None),
        ({"id": None}, None),
        ({"prediction": {"id": TASK_ID}}, None),
        ({}, None),
    ],
)
def test_callback_id_reads_the_prediction_it_carries(
    body: dict[str, Any], expected: str | None
) -> None:
    assert ReplicateAdapter().callback_id(body, {}) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [("starting", TaskStatus.QUEUED), ("processing", TaskStatus.PROCESSING)],
)
async def test_running_statuses(status: str, expected: TaskStatus) -> None:
    body = prediction(status=status, output=None, completed_at=None)
    context = PollContext(TASK_ID, checkpoint={"not_ready": 3})

    outcome = await poll(harness_for(reply(body)), context=context)

    assert outcome == PollOutcome(expected, status, raw=body)
    assert context.checkpoint is None  # a succeeded answer without output earlier was not the end


@pytest.mark.parametrize("status", ["queued", "", "booting"])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    body = prediction(status=status, output=None)

    with capture_logs() as logs:
        outcome = await poll(harness_for(reply(body)))

    assert outcome == PollOutcome(None, status, raw=body)
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "replicate",
            "upstream_status": status,
        }
    ]


async def test_succeeded_with_one_file() -> None:
    outcome = await poll(harness_for(reply(SUCCEEDED)))

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == "succeeded"
    assert outcome.raw == SUCCEEDED
    assert outcome.result == ReplicateResult(
        kind="replicate",
        output_urls=[AUDIO],
        output=AUDIO,
        output_expires_at=(COMPLETED_AT + timedelta(hours=1)).replace(microsecond=0),
        model="replicate/hello-world",
        version=SUCCEEDED["version"],
        predict_time_s=0.012683,
        created_at=datetime(2023, 9, 8, 16, 19, 34, 765994, tzinfo=UTC),
        started_at=datetime(2023, 9, 8, 16, 19, 34, 779176, tzinfo=UTC),
        completed_at=COMPLETED_AT,
        get_url=SUCCEEDED["urls"]["get"],
    )


@pytest.mark.parametrize(
    ("output", "urls"),
    [
        ([AUDIO, "https://replicate.delivery/pbxt/abc/out-1.wav"], None),
        ({"audio": AUDIO, "subtitles": "https://replicate.delivery/x/a.srt", "seconds": 3}, None),
        ({"files": [{"url": AUDIO}], "again": AUDIO}, [AUDIO]),
        ("hello Alice", []),
        (["hello", " ", "Alice"], []),
        (42, []),
        (False, []),
        ([AUDIO, "data:audio/wav;base64,AAAA", "ftp://host/x.wav", "/relative.wav"], [AUDIO]),
    ],
)
async def test_output_of_any_shape_is_kept_and_its_urls_listed(
    output: Any, urls: list[str] | None
) -> None:
    result = await result_of(output)

    assert result.output == output
    if urls is None:  # every string in it is a URL
        urls = list(output.values() if isinstance(output, dict) else output)
        urls = [u for u in urls if isinstance(u, str)]
    assert result.output_urls == urls


async def test_output_urls_are_bounded() -> None:
    output = [f"https://replicate.delivery/x/{n}.wav" for n in range(150)]
    nested: Any = AUDIO
    for _ in range(20):
        nested = [nested]

    assert len((await result_of(output)).output_urls) == 100
    assert (await result_of(nested)).output_urls == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, COMPLETED_AT + timedelta(hours=1)),
        # Polled long after the end: the hour runs from completed_at.
        ({"completed_at": "2023-09-08T16:00:00Z"}, datetime(2023, 9, 8, 17, tzinfo=UTC)),
        # A completed_at after pollhook's own clock (skew) or none: from when it got the result.
        ({"completed_at": "2023-09-08T18:00:00Z"}, NOW + timedelta(hours=1)),
        ({"completed_at": None}, NOW + timedelta(hours=1)),
        ({"completed_at": "yesterday"}, NOW + timedelta(hours=1)),
        ({"completed_at": "2023-09-08T16:00:00"}, datetime(2023, 9, 8, 17, tzinfo=UTC)),
        ({"completed_at": "2023-09-08T18:00:00+02:00"}, datetime(2023, 9, 8, 17, tzinfo=UTC)),
    ],
)
async def test_output_expiry(fields: dict[str, Any], expected: datetime) -> None:
    result = await result_of(AUDIO, **fields)

    assert result.output_expires_at == expected.replace(microsecond=0)


async def test_result_files_die_with_the_output_or_their_own_expiry() -> None:
    signed = "https://replicate.delivery/x/b.wav?Expires=" + str(
        int((COMPLETED_AT + timedelta(minutes=10)).timestamp())
    )
    result = await result_of([AUDIO, signed])
    adapter = ReplicateAdapter()

    expires = COMPLETED_AT.replace(microsecond=0) + timedelta(hours=1)
    assert adapter.result_files(result, received_at=NOW) == [
        ResultFile("output", AUDIO, expires),
        ResultFile("output", signed, expires - timedelta(minutes=50)),
    ]
    # Received earlier than the hour after the end would allow: still the end's hour.
    late = adapter.result_files(result, received_at=COMPLETED_AT - timedelta(minutes=30))
    assert late[0].expires_at == expires - timedelta(minutes=30)
    assert adapter.result_files(await result_of("text"), received_at=NOW) == []


async def test_the_result_round_trips_as_stored() -> None:
    result = await result_of({"audio": AUDIO, "meta": {"sr": 48000, "ok": True, "x": None}})

    assert read_result(result.model_dump(mode="json")) == result


@pytest.mark.parametrize(
    ("fields", "model", "predict_time", "get_url"),
    [
        ({"model": None, "metrics": {}, "urls": None}, None, None, None),
        ({"model": 3, "metrics": {"predict_time": "1.2"}, "urls": {"get": 5}}, None, None, None),
        (
            {"metrics": {"predict_time": True}, "urls": {"get": "/v1/x"}},
            "replicate/hello-world",
            None,
            None,
        ),
        (
            {"metrics": {"predict_time": -1}},
            "replicate/hello-world",
            None,
            SUCCEEDED["urls"]["get"],
        ),
        (
            {"metrics": {"predict_time": 12}},
            "replicate/hello-world",
            12.0,
            SUCCEEDED["urls"]["get"],
        ),
    ],
)
async def test_informative_fields_that_are_missing_or_mistyped_are_null(
    fields: dict[str, Any], model: str | None, predict_time: float | None, get_url: str | None
) -> None:
    result = await result_of(AUDIO, **fields)

    assert (result.model, result.predict_time_s, result.get_url) == (model, predict_time, get_url)
    assert result.output_urls == [AUDIO]


async def test_succeeded_without_output_is_not_ready_until_the_bound() -> None:
    body = prediction(output=None)
    context = PollContext(TASK_ID)

    for n in range(1, RESULT_NOT_READY_POLLS):
        error = await poll_error(harness_for(reply(body)), context=context)
        assert type(error) is ResultNotReady
        assert error.message == f"succeeded without output (poll {n} of at most 10)"
    error = await poll_error(harness_for(reply(body)), context=context)

    assert type(error) is TaskError
    assert error.code == "incomplete_result"


async def test_succeeded_with_its_data_removed_has_expired() -> None:
    body = prediction(output=None, data_removed=True, input={}, logs=None)

    outcome = await poll(harness_for(reply(body)))

    assert outcome.status is TaskStatus.EXPIRED
    assert outcome.result is None
    assert outcome.error is not None
    assert outcome.error["code"] == "data_removed"


@pytest.mark.parametrize(
    ("status", "error", "expected_status", "expected_error"),
    [
        ("failed", "CUDA out of memory", TaskStatus.FAILED, ("failed", "CUDA out of memory")),
        ("failed", None, TaskStatus.FAILED, ("failed", "the prediction failed")),
        ("failed", {"msg": "x"}, TaskStatus.FAILED, ("failed", "{'msg': 'x'}")),
        ("canceled", None, TaskStatus.FAILED, ("cancelled_upstream", None)),
        ("Cancelled", "stopped", TaskStatus.FAILED, ("cancelled_upstream", "stopped")),
        ("aborted", None, TaskStatus.EXPIRED, ("aborted", None)),
    ],
)
async def test_ends_without_output(
    status: str,
    error: Any,
    expected_status: TaskStatus,
    expected_error: tuple[str, str | None],
) -> None:
    body = prediction(status=status, error=error, output=None)

    outcome = await poll(harness_for(reply(body)))

    assert (outcome.status, outcome.upstream_status, outcome.result) == (
        expected_status,
        status,
        None,
    )
    assert outcome.error is not None
    code, message = expected_error
    assert outcome.error["code"] == code
    assert message is None or outcome.error["message"] == message
    assert outcome.error["message"]


def problem(status: int, detail: str, title: str = "Error") -> dict[str, Any]:
    return {"title": title, "detail": detail, "status": status}


UNAUTHENTICATED = problem(401, "You did not pass a valid authentication token", "Unauthenticated")


@pytest.mark.parametrize(
    ("http_status", "body", "error_type", "message"),
    [
        (401, UNAUTHENTICATED, CredentialError, UNAUTHENTICATED["detail"]),
        (
            402,
            problem(402, "You have insufficient credit"),
            CredentialError,
            "You have insufficient credit",
        ),
        (403, {"title": "Forbidden"}, CredentialError, "Forbidden"),
        (404, problem(404, "Not found."), TaskError, "Not found."),
        (404, {"detail": "Not found."}, TaskError, "Not found."),
        (422, problem(422, "Invalid id"), TransientError, "Invalid id"),
        (500, problem(500, "Internal error"), TransientError, "Internal error"),
        (503, {"title": " ", "detail": ""}, TransientError, "HTTP 503"),
    ],
)
async def test_problem_details(
    http_status: int, body: dict[str, Any], error_type: type[ProviderError], message: str
) -> None:
    error = await poll_error(harness_for(reply(body, status=http_status)))

    assert type(error) is error_type
    assert (error.code, error.message, error.raw) == (f"http_{http_status}", message, body)


@pytest.mark.parametrize(
    ("headers", "detail", "retry_after_s"),
    [
        ({"Retry-After": "20"}, "Request was throttled. Your rate limit resets in ~30s.", 20.0),
        ({}, "Request was throttled. Your rate limit resets in ~30s.", 30.0),
        ({}, "Request was throttled.", None),
    ],
)
async def test_rate_limited(
    headers: dict[str, str], detail: str, retry_after_s: float | None
) -> None:
    body = {"detail": detail}

    error = await poll_error(harness_for(reply(body, status=429, headers=headers)))

    assert type(error) is RateLimited
    assert (error.code, error.message, error.retry_after_s) == ("http_429", detail, retry_after_s)


@pytest.mark.parametrize(
    ("http_status", "text", "headers", "error_type", "code"),
    [
        # Not Replicate's problem shape: the HTTP status alone decides.
        (429, "Too Many Requests", {"Retry-After": "5"}, RateLimited, "http_429"),
        (401, "<html>401</html>", {}, CredentialError, "http_401"),
        (404, "<html>404</html>", {}, TransientError, "http_404"),
        (404, '{"message": "no route"}', {}, TransientError, "http_404"),
        (302, "", {"Location": "https://replicate.com"}, TransientError, "http_302"),
        (502, HTML_ERROR_PAGE, {}, TransientError, "http_502"),
        (200, HTML_ERROR_PAGE, {}, TransientError, "malformed_response"),
        (
            200,
            '{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "succ',
            {},
            TransientError,
            "malformed_response",
        ),
        (200, f'[{{"id": "{TASK_ID}"}}]', {}, TransientError, "malformed_response"),
        (200, "", {}, TransientError, "malformed_response"),
    ],
)
async def test_answers_that_are_not_replicate_problems(
    http_status: int,
    text: str,
    headers: dict[str, str],
    error_type: type[ProviderError],
    code: str,
) -> None:
    error = await poll_error(harness_for(reply(text=text, status=http_status, headers=headers)))

    assert type(error) is error_type
    assert error.code == code


@pytest.mark.parametrize(
    "body",
    [
        prediction(status=None),
        prediction(status=3),
        prediction(status=["succeeded"]),
        {"id": TASK_ID},
        # The answer must name this prediction, exactly: anything else is not its answer.
        prediction(id="qz7mfxlkw3vdpygt1o8hbnsuae"),
        prediction(id=TASK_ID.upper()),
        prediction(id=None),
        prediction(id=[TASK_ID]),
        {key: value for key, value in SUCCEEDED.items() if key != "id"},
    ],
)
async def test_wrong_shapes_are_malformed(body: dict[str, Any]) -> None:
    error = await poll_error(harness_for(reply(body)))

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert error.raw == body


@pytest.mark.parametrize("task_id", ["..", "gm3q/../../account", "gm3q?x=1"])
async def test_a_stored_id_that_is_not_a_prediction_id_fails_unsent(task_id: str) -> None:
    harness = harness_for(reply(SUCCEEDED))

    error = await poll_error(harness, task_id)

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert harness.requests == []
    assert harness.slots == 0


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


@pytest.mark.parametrize(
    "fields",
    [
        {"created_at": "0001-01-01T00:00:00+05:00"},
        {"completed_at": "9999-12-31T23:00:00-05:00"},
        {"metrics": {"predict_time": 10**400}},
    ],
)
async def test_figures_no_datetime_or_float_holds_are_dropped_not_fatal(
    fields: dict[str, Any],
) -> None:
    """A time past year 1 or 9999 in UTC, or an integer too large for a float, is an
    informative field gone, not a poll that fails every time."""
    outcome = await poll(harness_for(reply(prediction(**fields))))
    assert outcome.status is TaskStatus.SUCCEEDED
    assert isinstance(outcome.result, ReplicateResult)
    assert outcome.result.output_urls == [AUDIO]
