"""MiniMax T2A async adapter against every documented answer shape (docs/upstreams.md §2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import ProviderKind
from app.models import TaskStatus
from app.providers.base import (
    CredentialError,
    PollOutcome,
    ProviderError,
    RateLimited,
    TaskError,
    TransientError,
)
from app.providers.minimax_t2a import MinimaxT2AAdapter
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
OK = {"status_code": 0, "status_msg": "success"}


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


async def poll(harness: Harness) -> PollOutcome:
    return await MinimaxT2AAdapter(clock=lambda: NOW).poll(harness.upstream, TASK_ID)


async def poll_error(harness: Harness) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness)
    return caught.value


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
    assert outcome.result == {
        "file_id": str(FILE_ID),
        "download_url": DOWNLOAD_URL,
        "download_url_expires_at": "2026-03-01T21:00:00Z",
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

    assert outcome.result is not None
    assert outcome.result["file_id"] == str(FILE_ID)


@pytest.mark.parametrize("file_id", [None, 0, "", "0"])
async def test_success_without_file_id_is_transient(file_id: Any) -> None:
    body = query_body("Success", file_id=file_id)
    harness = harness_for(reply(body))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "missing_file_id"
    assert error.raw == body
    assert harness.slots == 1


async def test_success_with_the_file_id_key_absent() -> None:
    body = {"task_id": int(TASK_ID), "status": "Success", "base_resp": OK}
    harness = harness_for(reply(body))

    error = await poll_error(harness)

    assert error.code == "missing_file_id"


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
        (reply(failing(2013, "invalid params")), TaskError, "2013"),
        (reply(failing(20132, "invalid file_id")), TaskError, "20132"),
        (reply(failing(1000, "unknown error")), TransientError, "1000"),
        (reply(text=HTML_ERROR_PAGE, status=502), TransientError, "http_502"),
        (reply(text="{", status=200), TransientError, "malformed_response"),
        (reply({"base_resp": OK}), TransientError, "missing_download_url"),
        (reply({"file": None, "base_resp": OK}), TransientError, "missing_download_url"),
        (reply(retrieve_body(download_url=None)), TransientError, "missing_download_url"),
        (reply(retrieve_body(download_url="")), TransientError, "missing_download_url"),
        (
            reply({"file": {"file_id": FILE_ID}, "base_resp": OK}),
            TransientError,
            "missing_download_url",
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
async def test_retrieve_failures(
    retrieved: Handler, error_type: type[ProviderError], code: str
) -> None:
    harness = harness_for(routes({QUERY: reply(query_body("Success")), RETRIEVE: retrieved}))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code
    assert harness.paths == [QUERY, RETRIEVE]
    assert harness.slots == 2


@pytest.mark.parametrize("status", ["Failed", "failed"])
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


@pytest.mark.parametrize("status", ["Queueing", "Preparing", "Fail", ""])
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
