"""MiniMax T2A async adapter against every documented answer shape (docs/providers.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import ProviderKind
from app.models import TaskStatus
from app.providers.base import (
    RESULT_NOT_READY_POLLS,
    CredentialError,
    PollContext,
    PollOutcome,
    ProviderError,
    RateLimited,
    ResultNotReady,
    TaskError,
    TransientError,
)
from app.providers.minimax_t2a import MinimaxT2AAdapter, MinimaxT2AResult
from app.providers.registry import adapter_for
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

TASK_ID = "95157322514444"
FILE_ID = 95157322514496
QUERY = "/v1/query/t2a_async_query_v2"
RETRIEVE = "/v1/files/retrieve"
BASE_URL = "https://api.minimax.test"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DOWNLOAD_URL = "https://cdn.minimax.test/95157322514496.tar?Expires=1772398800&Signature=abc"
BACKUP_URL = "https://backup.minimax.test/95157322514496.tar?Signature=def"
NINE_HOURS_LATER = datetime(2026, 3, 1, 21, 0, 0, tzinfo=UTC)  # NOW + 32,400 s, whole seconds
OK = {"status_code": 0, "status_msg": "success"}
RESUME = {"file_id": str(FILE_ID), "status": "Success"}


def query_body(status: Any = "Processing", **extra: Any) -> dict[str, Any]:
    return {"task_id": int(TASK_ID), "status": status, "file_id": FILE_ID, "base_resp": OK, **extra}


def retrieve_body(**file: Any) -> dict[str, Any]:
    return {
        "file": {
            "file_id": FILE_ID,
            "bytes": 0,
            "created_at": 1772366400,
            "filename": f"{FILE_ID}.tar",
            "purpose": "t2a_async",
            "download_url": DOWNLOAD_URL,
            **file,
        },
        "base_resp": OK,
    }


def failing(code: int, msg: str = "boom") -> dict[str, Any]:
    return {"task_id": 0, "base_resp": {"status_code": code, "status_msg": msg}}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, base_url=BASE_URL)


async def poll(harness: Harness, context: PollContext | None = None) -> PollOutcome:
    return await MinimaxT2AAdapter(clock=lambda: NOW).poll(
        harness.upstream, context or PollContext(TASK_ID)
    )


async def poll_error(harness: Harness, context: PollContext | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, context)
    return caught.value


def result(
    download_url: str = DOWNLOAD_URL,
    expires_at: datetime = NINE_HOURS_LATER,
    filename: str | None = f"{FILE_ID}.tar",
) -> MinimaxT2AResult:
    return MinimaxT2AResult(
        kind="minimax_t2a",
        file_id=str(FILE_ID),
        download_url=download_url,
        download_url_expires_at=expires_at,
        filename=filename,
    )


def test_registry_serves_this_adapter() -> None:
    adapter = adapter_for(ProviderKind.MINIMAX_T2A)

    assert isinstance(adapter, MinimaxT2AAdapter)
    assert adapter.kind is ProviderKind.MINIMAX_T2A
    assert adapter_for(ProviderKind.MINIMAX_T2A) is adapter


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(query_body()))

    await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{QUERY}?task_id={TASK_ID}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert harness.slots == 1


@pytest.mark.parametrize("status", ["Processing", "processing", "PROCESSING"])
async def test_processing_with_file_id_is_not_done(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    outcome = await poll(harness)

    assert outcome == PollOutcome(
        status=TaskStatus.PROCESSING, upstream_status=status, raw=query_body(status)
    )
    assert harness.paths == [QUERY]
    assert harness.slots == 1


@pytest.mark.parametrize("status", ["Success", "success"])
async def test_success_resolves_the_file_into_a_download_url(status: str) -> None:
    harness = harness_for(
        routes({QUERY: reply(query_body(status)), RETRIEVE: reply(retrieve_body())})
    )

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == status
    assert outcome.result == result()
    assert outcome.result.model_dump(mode="json") == {
        "kind": "minimax_t2a",
        "file_id": str(FILE_ID),
        "download_url": DOWNLOAD_URL,
        "download_url_expires_at": "2026-03-01T21:00:00Z",
        "filename": f"{FILE_ID}.tar",
    }
    assert outcome.error is None
    assert outcome.raw == {"query": query_body(status), "retrieve": retrieve_body()}
    assert harness.paths == [QUERY, RETRIEVE]
    assert str(harness.requests[1].url) == f"{BASE_URL}{RETRIEVE}?file_id={FILE_ID}"
    assert harness.requests[1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert harness.slots == 2


async def test_success_with_file_id_as_a_string_and_task_id_as_a_string() -> None:
    body = query_body("Success", file_id=str(FILE_ID), task_id=TASK_ID)
    harness = harness_for(routes({QUERY: reply(body), RETRIEVE: reply(retrieve_body())}))

    outcome = await poll(harness)

    assert outcome.result == result()


@pytest.mark.parametrize("file_id", [None, 0, "", "0"])
async def test_success_without_file_id_is_not_ready(file_id: Any) -> None:
    body = query_body("Success", file_id=file_id)
    harness = harness_for(reply(body))
    context = PollContext(TASK_ID)

    error = await poll_error(harness, context)

    assert type(error) is ResultNotReady
    assert error.code == "result_not_ready"
    assert error.message.startswith("status Success without a file_id (poll 1 of at most")
    assert error.raw == body
    assert harness.slots == 1
    assert context.checkpoint == {"not_ready": 1}  # no file_id: the status is asked again


async def test_success_with_the_file_id_key_absent() -> None:
    body = {"task_id": int(TASK_ID), "status": "Success", "base_resp": OK}
    harness = harness_for(reply(body))

    error = await poll_error(harness)

    assert error.code == "result_not_ready"


async def test_success_without_file_id_fails_the_task_after_the_bound() -> None:
    harness = harness_for(reply(query_body("Success", file_id=None)))
    context = PollContext(TASK_ID)

    errors = [await poll_error(harness, context) for _ in range(RESULT_NOT_READY_POLLS)]

    assert [e.code for e in errors] == ["result_not_ready"] * (RESULT_NOT_READY_POLLS - 1) + [
        "incomplete_result"
    ]
    assert type(errors[-1]) is TaskError
    assert harness.paths == [QUERY] * RESULT_NOT_READY_POLLS


@pytest.mark.parametrize("file_id", [1.5, "12ab", "-5", -5, True, [1], {"id": 1}, "9" * 25, 2**63])
async def test_success_with_a_malformed_file_id(file_id: Any) -> None:
    harness = harness_for(reply(query_body("Success", file_id=file_id)))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("retrieved", "error_type", "code"),
    [
        (reply(failing(1002, "rate limit")), RateLimited, "1002"),
        (reply(failing(1004, "token not match group")), CredentialError, "1004"),
        # Right after Success the file may not exist yet: not a reason to fail the task.
        (reply(failing(2013, "invalid params")), ResultNotReady, "result_not_ready"),
        (reply(failing(20132, "invalid file_id")), ResultNotReady, "result_not_ready"),
        (reply(failing(1026, "sensitive content")), TaskError, "1026"),
        (reply(failing(1000, "unknown error")), TransientError, "1000"),
        (reply(text=HTML_ERROR_PAGE, status=502), TransientError, "http_502"),
        (reply(text="{", status=200), TransientError, "malformed_response"),
        (reply({"base_resp": OK}), ResultNotReady, "result_not_ready"),
        (reply({"file": None, "base_resp": OK}), ResultNotReady, "result_not_ready"),
        (reply(retrieve_body(download_url=None)), ResultNotReady, "result_not_ready"),
        (reply(retrieve_body(download_url="")), ResultNotReady, "result_not_ready"),
        (
            reply({"file": {"file_id": FILE_ID}, "base_resp": OK}),
            ResultNotReady,
            "result_not_ready",
        ),
        (reply({"file": [1], "base_resp": OK}), TransientError, "malformed_response"),
        (reply(retrieve_body(download_url=42)), TransientError, "malformed_response"),
        (
            reply(retrieve_body(download_url="javascript:alert(1)")),
            TransientError,
            "malformed_response",
        ),
        (reply({"file": {"download_url": DOWNLOAD_URL}}), TransientError, "malformed_response"),
        (raising(httpx.ReadTimeout("slow")), TransientError, "timeout"),
    ],
)
async def test_retrieve_failures_keep_the_success_in_the_checkpoint(
    retrieved: Handler, error_type: type[ProviderError], code: str
) -> None:
    harness = harness_for(routes({QUERY: reply(query_body("Success")), RETRIEVE: retrieved}))
    context = PollContext(TASK_ID)

    error = await poll_error(harness, context)

    assert type(error) is error_type
    assert error.code == code
    assert harness.paths == [QUERY, RETRIEVE]
    assert harness.slots == 2
    # The next poll resumes at the retrieve: MiniMax said Success, which cannot change.
    assert context.checkpoint is not None
    assert context.checkpoint["file_id"] == str(FILE_ID)
    assert context.checkpoint["status"] == "Success"


async def test_a_resumed_poll_sends_only_the_retrieve() -> None:
    harness = harness_for(routes({RETRIEVE: reply(retrieve_body())}))  # a query would fail it

    outcome = await poll(harness, PollContext(TASK_ID, checkpoint=dict(RESUME)))

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == "Success"
    assert outcome.result == result()
    assert outcome.raw == {"retrieve": retrieve_body()}
    assert harness.paths == [RETRIEVE]
    assert harness.slots == 1


async def test_a_file_not_ready_after_success_is_retried_then_fails_the_task() -> None:
    harness = harness_for(
        routes({QUERY: reply(query_body("Success")), RETRIEVE: reply(failing(2013, "no file"))})
    )
    context = PollContext(TASK_ID)

    errors = [await poll_error(harness, context) for _ in range(RESULT_NOT_READY_POLLS)]

    assert [e.code for e in errors] == ["result_not_ready"] * (RESULT_NOT_READY_POLLS - 1) + [
        "result_unavailable"
    ]
    assert type(errors[-1]) is TaskError
    assert errors[-1].message == (
        f"File Retrieve answered 2013 (no file) after Success, {RESULT_NOT_READY_POLLS} "
        "polls in a row"
    )
    # One status query, then only retrieves.
    assert harness.paths == [QUERY] + [RETRIEVE] * RESULT_NOT_READY_POLLS


async def test_the_file_ready_after_a_few_tries_succeeds() -> None:
    answers = [failing(2013, "no file"), failing(20132, "no file"), retrieve_body()]
    harness = harness_for(
        routes(
            {
                QUERY: reply(query_body("Success")),
                RETRIEVE: lambda _: httpx.Response(200, json=answers.pop(0)),
            }
        )
    )
    context = PollContext(TASK_ID)

    first = await poll_error(harness, context)
    second = await poll_error(harness, context)
    outcome = await poll(harness, context)

    assert [first.code, second.code] == ["result_not_ready", "result_not_ready"]
    assert outcome.result == result()
    assert harness.paths == [QUERY, RETRIEVE, RETRIEVE, RETRIEVE]


@pytest.mark.parametrize(
    "checkpoint",
    [
        None,
        {},
        {"not_ready": 3},
        {"file_id": FILE_ID},  # not written by this version (a number)
        {"file_id": "12ab"},
        {"file_id": "0"},
        {"file_id": "007"},
        {"file_id": ["1"]},
    ],
)
async def test_a_checkpoint_without_a_usable_file_id_queries_the_status(
    checkpoint: dict[str, Any] | None,
) -> None:
    harness = harness_for(reply(query_body("Processing")))
    context = PollContext(TASK_ID, checkpoint=checkpoint)

    outcome = await poll(harness, context)

    assert outcome.status is TaskStatus.PROCESSING
    assert harness.paths == [QUERY]
    assert context.checkpoint is None


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ({}, result()),
        # Only the backup URL: it is as good as the main one.
        ({"download_url": None, "backup_download_url": BACKUP_URL}, result(BACKUP_URL)),
        ({"download_url": "", "backup_download_url": BACKUP_URL}, result(BACKUP_URL)),
        ({"backup_download_url": BACKUP_URL}, result()),  # the main one wins
        # MiniMax's own doc example is schemeless: https:// + a DNS host name with a dot.
        ({"download_url": "www.downloadurl.com"}, result("https://www.downloadurl.com")),
        (
            {"download_url": "cdn.minimax.test/a/b.tar?Expires=1772370000"},
            result(
                "https://cdn.minimax.test/a/b.tar?Expires=1772370000",
                datetime(2026, 3, 1, 13, 0, 0, tzinfo=UTC),
            ),
        ),
        # The URL's own expiry, when earlier than 9 h, is the one that counts.
        (
            {"download_url": "https://oss.test/f.tar?OSSAccessKeyId=k&Expires=1772370000&S=x"},
            result(
                "https://oss.test/f.tar?OSSAccessKeyId=k&Expires=1772370000&S=x",
                datetime(2026, 3, 1, 13, 0, 0, tzinfo=UTC),
            ),
        ),
        (
            {"download_url": "https://oss.test/f.tar?expires=1772370000"},
            result(
                "https://oss.test/f.tar?expires=1772370000",
                datetime(2026, 3, 1, 13, 0, 0, tzinfo=UTC),
            ),
        ),
        (  # later than 9 h: the documented 9 h still bind
            {"download_url": "https://oss.test/f.tar?Expires=1772500000"},
            result("https://oss.test/f.tar?Expires=1772500000"),
        ),
        (
            {
                "download_url": "https://s3.test/f.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                "&X-Amz-Date=20260301T115500Z&X-Amz-Expires=3600&X-Amz-Signature=abc"
            },
            result(
                "https://s3.test/f.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                "&X-Amz-Date=20260301T115500Z&X-Amz-Expires=3600&X-Amz-Signature=abc",
                datetime(2026, 3, 1, 12, 55, 0, tzinfo=UTC),
            ),
        ),
        (  # expiries it cannot read are ignored, not guessed at
            {"download_url": "https://s3.test/f.tar?Expires=soon&X-Amz-Date=x&X-Amz-Expires=60"},
            result("https://s3.test/f.tar?Expires=soon&X-Amz-Date=x&X-Amz-Expires=60"),
        ),
        ({"filename": None}, result(filename=None)),
        ({"filename": "speech.tar"}, result(filename="speech.tar")),
    ],
)
async def test_what_a_retrieve_hands_over(file: dict[str, Any], expected: MinimaxT2AResult) -> None:
    harness = harness_for(
        routes({QUERY: reply(query_body("Success")), RETRIEVE: reply(retrieve_body(**file))})
    )

    outcome = await poll(harness)

    assert outcome.result == expected


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "a/b.tar", "..", "x\u202e.tar", "x" * 300, 42, ["a.tar"]]
)
async def test_a_filename_that_is_not_a_plain_file_name_is_dropped(filename: Any) -> None:
    harness = harness_for(
        routes(
            {
                QUERY: reply(query_body("Success")),
                RETRIEVE: reply(retrieve_body(filename=filename)),
            }
        )
    )

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome.result == result(filename=None)
    assert [entry["event"] for entry in logs] == ["provider.bad_filename"]


@pytest.mark.parametrize(
    "url",
    [
        "downloadurl",  # no dot: not a host name
        "localhost/f.tar",
        "127.0.0.1/f.tar",  # an address, not a host name
        "cdn.test:8443/f.tar",
        "user@cdn.test/f.tar",
        "/relative/f.tar",
        "ftp://cdn.test/f.tar",
        "//cdn.test/f.tar",
        "cdn..test/f.tar",
        "-cdn.test/f.tar",
        "cdn.test /f.tar",
    ],
)
@pytest.mark.parametrize("field", ["download_url", "backup_download_url"])
async def test_a_url_that_is_neither_absolute_nor_a_schemeless_host_is_malformed(
    url: str, field: str
) -> None:
    file = {"download_url": None, field: url}
    harness = harness_for(
        routes({QUERY: reply(query_body("Success")), RETRIEVE: reply(retrieve_body(**file))})
    )

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert field in error.message


@pytest.mark.parametrize("status", ["Failed", "failed", "Fail", "FAIL"])
async def test_failed(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.upstream_status == status
    assert outcome.error == {"code": "failed", "message": "the provider reported the task failed"}
    assert outcome.result is None
    assert harness.slots == 1


async def test_failed_keeps_an_informative_status_msg() -> None:
    body = query_body("Failed", base_resp={"status_code": 0, "status_msg": "audio render error"})
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome.error == {"code": "failed", "message": "audio render error"}


@pytest.mark.parametrize("status", ["Expired", "expired"])
async def test_expired(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.EXPIRED
    assert outcome.error == {"code": "expired", "message": "the provider reported the task expired"}
    assert harness.slots == 1


@pytest.mark.parametrize("status", ["Queueing", "queueing", "Preparing", "PREPARING"])
async def test_queued_statuses_of_minimax_s_other_async_apis(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    outcome = await poll(harness)

    assert outcome == PollOutcome(TaskStatus.QUEUED, status, raw=query_body(status))
    assert harness.paths == [QUERY]


@pytest.mark.parametrize("status", ["Rendering", "Failing", ""])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    harness = harness_for(reply(query_body(status)))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome == PollOutcome(status=None, upstream_status=status, raw=query_body(status))
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "minimax_t2a",
            "upstream_status": status,
        }
    ]


# code → (error class, retry_after_s with no Retry-After header)
CODES: list[tuple[int, type[ProviderError], float | None]] = [
    (1002, RateLimited, None),
    (1039, RateLimited, None),
    (2045, RateLimited, None),
    (1041, RateLimited, 60.0),
    (2056, RateLimited, 300.0),
    (1004, CredentialError, None),
    (2049, CredentialError, None),
    (2013, TaskError, None),
    (20132, TaskError, None),
    (1008, CredentialError, None),
    (1026, TaskError, None),
    (1027, TaskError, None),
    (1042, TaskError, None),
    (1000, TransientError, None),
    (1001, TransientError, None),
    (1024, TransientError, None),
    (1033, TransientError, None),
    (2038, TransientError, None),
    (999999, TransientError, None),
    (-1, TransientError, None),
]


@pytest.mark.parametrize(("code", "error_type", "retry_after"), CODES)
async def test_base_resp_codes_with_http_200(
    code: int, error_type: type[ProviderError], retry_after: float | None
) -> None:
    harness = harness_for(reply(failing(code, f"message for {code}")))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == str(code)
    assert error.message == f"message for {code}"
    assert error.raw == failing(code, f"message for {code}")
    if isinstance(error, RateLimited):
        assert error.retry_after_s == retry_after
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("http_status", "code", "error_type"),
    [
        (401, 2049, CredentialError),
        (401, 1004, CredentialError),
        (500, 1002, RateLimited),
        (500, 2013, TaskError),
        (503, 1033, TransientError),
        (400, 2013, TaskError),
        (429, 1039, RateLimited),
        (403, 1000, TransientError),
    ],
)
async def test_base_resp_wins_over_the_http_status(
    http_status: int, code: int, error_type: type[ProviderError]
) -> None:
    harness = harness_for(reply(failing(code), status=http_status))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == str(code)


@pytest.mark.parametrize(
    ("code", "header", "expected"),
    [(1002, "30", 30.0), (2056, "10", 300.0), (2056, "900", 900.0), (1041, "garbage", 60.0)],
)
async def test_rate_limit_takes_the_longer_of_header_and_floor(
    code: int, header: str, expected: float
) -> None:
    harness = harness_for(reply(failing(code), headers={"Retry-After": header}))

    error = await poll_error(harness)

    assert isinstance(error, RateLimited)
    assert error.retry_after_s == expected


async def test_empty_status_msg_gets_a_generic_message() -> None:
    harness = harness_for(reply({"base_resp": {"status_code": 2013, "status_msg": ""}}))

    error = await poll_error(harness)

    assert error.message == "MiniMax status_code 2013"


@pytest.mark.parametrize(
    ("http_status", "headers", "error_type", "code"),
    [
        (200, {}, TransientError, "malformed_response"),
        (401, {}, CredentialError, "http_401"),
        (403, {}, CredentialError, "http_403"),
        (503, {}, TransientError, "http_503"),
        (429, {"Retry-After": "12"}, RateLimited, "http_429"),
        (404, {}, TransientError, "http_404"),
    ],
)
async def test_without_base_resp_the_http_status_decides(
    http_status: int, headers: dict[str, str], error_type: type[ProviderError], code: str
) -> None:
    body = {"error": "something"}
    harness = harness_for(reply(body, status=http_status, headers=headers))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 12.0


@pytest.mark.parametrize("http_status", [500, 404, 302])
async def test_a_zero_base_resp_on_an_error_status_is_not_trusted(http_status: int) -> None:
    harness = harness_for(reply(query_body("Success"), status=http_status))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == f"http_{http_status}"
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("http_status", "text", "code"),
    [
        (502, HTML_ERROR_PAGE, "http_502"),
        (200, HTML_ERROR_PAGE, "malformed_response"),
        (200, '{"task_id": 95157322514444, "status": "Succ', "malformed_response"),
        (200, '[{"status": "Success"}]', "malformed_response"),
        (200, "", "malformed_response"),
        (401, "Unauthorized", "http_401"),
    ],
)
async def test_bodies_that_are_not_json_objects(http_status: int, text: str, code: str) -> None:
    harness = harness_for(reply(text=text, status=http_status))

    error = await poll_error(harness)

    assert error.code == code
    assert error.raw is not None
    assert error.raw["http_status"] == http_status


@pytest.mark.parametrize(
    "body",
    [
        query_body(base_resp="ok"),
        query_body(base_resp=[0]),
        query_body(base_resp=None),
        query_body(base_resp={"status_code": "0", "status_msg": "success"}),
        query_body(base_resp={"status_code": False}),
        query_body(base_resp={"status_msg": "success"}),
        query_body(status=1),
        query_body(status=None),
        query_body(status={"value": "Success"}),
        {"task_id": int(TASK_ID), "base_resp": OK},
        query_body(task_id=12345),
        query_body(task_id=True),
        query_body(task_id=[TASK_ID]),
    ],
)
async def test_wrong_types_are_malformed(body: dict[str, Any]) -> None:
    harness = harness_for(reply(body))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"
    assert error.raw == body


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


async def test_huge_body_is_refused() -> None:
    harness = harness_for(lambda _: httpx.Response(200, content=b" " * (2 * 1024 * 1024)))

    error = await poll_error(harness)

    assert error.code == "response_too_large"


async def test_large_answers_are_stored_capped() -> None:
    body = query_body("Processing", padding="x" * 20_000)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.PROCESSING
    assert outcome.raw["truncated"] is True
    assert len(outcome.raw["text"]) == 8 * 1024


async def test_long_unknown_status_is_clipped() -> None:
    harness = harness_for(reply(query_body("Q" * 5000)))

    outcome = await poll(harness)

    assert outcome.upstream_status == "Q" * 200 + "…"
