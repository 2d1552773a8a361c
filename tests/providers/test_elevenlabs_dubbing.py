"""ElevenLabs dubbing adapter against every documented answer shape (docs/providers.md)."""

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
    CallbackSigning,
    CredentialError,
    PollContext,
    PollOutcome,
    ProviderError,
    RateLimited,
    ResultNotReady,
    TaskError,
    TransientError,
)
from app.providers.elevenlabs_dubbing import (
    ElevenLabsDubbedLanguage,
    ElevenLabsDubbingAdapter,
    ElevenLabsDubbingResult,
)
from app.providers.external_ids import InvalidExternalId
from app.providers.registry import adapter_for, read_result
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

DUBBING_ID = "21m00Tcm4TlvDq8ikWAM"
BASE_URL = "https://api.elevenlabs.test"
PATH = f"/v1/dubbing/{DUBBING_ID}"

# The Get dubbing page's example, verbatim.
DUBBED: dict[str, Any] = {
    "dubbing_id": DUBBING_ID,
    "name": "My Dubbing Project",
    "status": "dubbed",
    "source_language": "en",
    "target_languages": ["es", "fr", "de"],
    "created_at": "2025-07-15T14:49:41.149000",
    "editable": True,
    "media_metadata": {"content_type": "video/mp4", "duration": 127.5},
}


def dub(**fields: Any) -> dict[str, Any]:
    base = {
        "dubbing_id": DUBBING_ID,
        "name": "My Dubbing Project",
        "status": "dubbing",
        "target_languages": ["es"],
        "created_at": "2025-07-15T14:49:41.149000",
    }
    return {**base, **fields}


def detail(status: str, message: str = "explained") -> dict[str, Any]:
    return {"detail": {"status": status, "message": message}}


def harness_for(handler: Handler, base_url: str = BASE_URL) -> Harness:
    return make_harness(handler, kind=ProviderKind.ELEVENLABS_DUBBING, base_url=base_url)


async def poll(
    harness: Harness, task_id: str = DUBBING_ID, context: PollContext | None = None
) -> PollOutcome:
    return await ElevenLabsDubbingAdapter().poll(harness.upstream, context or PollContext(task_id))


async def poll_error(
    harness: Harness, task_id: str = DUBBING_ID, context: PollContext | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, task_id, context)
    return caught.value


def language(code: str, base: str = f"{BASE_URL}{PATH}") -> ElevenLabsDubbedLanguage:
    return ElevenLabsDubbedLanguage(
        language=code,
        audio_url=f"{base}/audio/{code}",
        transcript_url=f"{base}/transcript/{code}?format_type=srt",
    )


def test_registry_serves_this_adapter() -> None:
    adapter = adapter_for(ProviderKind.ELEVENLABS_DUBBING)

    assert isinstance(adapter, ElevenLabsDubbingAdapter)
    assert adapter.kind is ProviderKind.ELEVENLABS_DUBBING
    assert adapter.requests_per_success == 0


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(dub()))

    outcome = await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{PATH}"
    assert request.headers["xi-api-key"] == API_KEY
    assert "Authorization" not in request.headers
    assert outcome == PollOutcome(TaskStatus.PROCESSING, "dubbing", raw=dub())
    assert harness.slots == 1


async def test_an_id_with_url_syntax_is_one_path_segment() -> None:
    task_id = "a..b?c=1#d%"
    harness = harness_for(reply(dub(dubbing_id=task_id)))

    outcome = await poll(harness, task_id)

    assert outcome.status is TaskStatus.PROCESSING
    [request] = harness.requests
    assert request.url.raw_path == b"/v1/dubbing/a..b%3Fc%3D1%23d%25"


@pytest.mark.parametrize("task_id", [".", "..", "a/b", "../x", "a\\b", "x\u202e", "x\u2028", " x"])
async def test_a_stored_id_that_would_leave_the_path_fails_the_task_unsent(task_id: str) -> None:
    harness = harness_for(reply(DUBBED))

    error = await poll_error(harness, task_id)

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert harness.requests == []
    assert harness.slots == 0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", TaskStatus.QUEUED),
        ("preparing", TaskStatus.PROCESSING),
        ("dubbing", TaskStatus.PROCESSING),
        ("Dubbing", TaskStatus.PROCESSING),
        ("QUEUED", TaskStatus.QUEUED),
    ],
)
async def test_running_statuses(status: str, expected: TaskStatus) -> None:
    body = dub(status=status)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(expected, status, raw=body)
    assert outcome.ready_at is None  # the GET states no ETA


async def test_dubbed_lists_every_language_on_the_instance_host() -> None:
    harness = harness_for(reply(DUBBED))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == "dubbed"
    assert outcome.raw == DUBBED
    assert outcome.result == ElevenLabsDubbingResult(
        kind="elevenlabs_dubbing",
        dubbing_id=DUBBING_ID,
        name="My Dubbing Project",
        source_language="en",
        media_content_type="video/mp4",
        media_duration_s=127.5,
        languages=[language("es"), language("fr"), language("de")],
    )
    assert outcome.ready_at is None


async def test_the_urls_keep_a_base_path_and_escape_the_id_and_language() -> None:
    task_id = "a%b"
    body = dub(dubbing_id=task_id, status="dubbed", target_languages=["pt-BR", "x?y"])
    harness = harness_for(reply(body), base_url="https://proxy.test/eleven/")

    outcome = await poll(harness, task_id)

    assert isinstance(outcome.result, ElevenLabsDubbingResult)
    base = "https://proxy.test/eleven/v1/dubbing/a%25b"
    assert outcome.result.languages == [
        language("pt-BR", base),
        ElevenLabsDubbedLanguage(
            language="x?y",
            audio_url=f"{base}/audio/x%3Fy",
            transcript_url=f"{base}/transcript/x%3Fy?format_type=srt",
        ),
    ]


async def test_dubbed_with_only_the_required_fields() -> None:
    body = {"dubbing_id": DUBBING_ID, "name": "", "status": "dubbed", "target_languages": ["es"]}
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome.result == ElevenLabsDubbingResult(
        kind="elevenlabs_dubbing", dubbing_id=DUBBING_ID, languages=[language("es")]
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"source_language": 7, "media_metadata": "video/mp4"},
        {"source_language": None, "media_metadata": {"content_type": 1, "duration": "127"}},
        {"media_metadata": {"duration": True}},
    ],
)
async def test_bad_descriptive_fields_do_not_hold_back_the_dub(extra: dict[str, Any]) -> None:
    harness = harness_for(reply(dub(status="dubbed", **extra)))

    outcome = await poll(harness)

    assert isinstance(outcome.result, ElevenLabsDubbingResult)
    assert outcome.result.source_language is None
    assert outcome.result.media_content_type is None
    assert outcome.result.media_duration_s is None
    assert outcome.result.languages == [language("es")]


async def test_dubbed_without_languages_is_not_ready_then_fails() -> None:
    harness = harness_for(reply(dub(status="dubbed", target_languages=[])))
    context = PollContext(DUBBING_ID)

    for seen in range(1, RESULT_NOT_READY_POLLS):
        error = await poll_error(harness, context=context)
        assert type(error) is ResultNotReady
        assert context.checkpoint == {"not_ready": seen}
    error = await poll_error(harness, context=context)

    assert type(error) is TaskError
    assert error.code == "incomplete_result"


async def test_a_running_answer_resets_the_not_ready_count() -> None:
    context = PollContext(DUBBING_ID, checkpoint={"not_ready": 3})

    await poll(harness_for(reply(dub())), context=context)

    assert context.checkpoint is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"error": "Could not detect speech in the source media"}, None),
        ({"error": "  spaced  "}, "spaced"),
        ({"error": None}, "the provider reported the dub failed"),
        ({}, "the provider reported the dub failed"),
        ({"error": ""}, "the provider reported the dub failed"),
        ({"error": {"code": 1}}, "the provider reported the dub failed"),
    ],
)
async def test_failed(fields: dict[str, Any], message: str | None) -> None:
    body = dub(status="failed", **fields)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    expected = message or fields["error"]
    assert outcome == PollOutcome(
        TaskStatus.FAILED, "failed", error={"code": "failed", "message": expected}, raw=body
    )


@pytest.mark.parametrize("status", ["cancelled", "archived", ""])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    body = dub(status=status)
    harness = harness_for(reply(body))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome == PollOutcome(None, status, raw=body)
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "elevenlabs_dubbing",
            "upstream_status": status,
        }
    ]


@pytest.mark.parametrize(
    ("http_status", "body", "error_type", "code", "message"),
    [
        (401, detail("invalid_api_key", "Bad key"), CredentialError, "invalid_api_key", "Bad key"),
        (401, detail("missing_permissions"), CredentialError, "missing_permissions", "explained"),
        (403, {"detail": "Forbidden"}, CredentialError, "http_403", "HTTP 403"),
        (404, detail("dubbing_not_found", "Gone"), TaskError, "dubbing_not_found", "Gone"),
        (404, {"detail": "Not Found"}, TransientError, "http_404", "HTTP 404"),
        (404, detail("voice_not_found"), TransientError, "voice_not_found", "explained"),
        (
            422,
            {"detail": [{"loc": ["path", "dubbing_id"], "msg": "bad", "type": "value_error"}]},
            TaskError,
            "http_422",
            "the dubbing_id was refused as invalid",
        ),
        (422, detail("invalid"), TransientError, "invalid", "explained"),
        (500, detail("server_error", "boom"), TransientError, "server_error", "boom"),
        (503, {}, TransientError, "http_503", "HTTP 503"),
        (408, {}, TransientError, "http_408", "HTTP 408"),
        (400, detail("invalid_request", "nope"), TransientError, "invalid_request", "nope"),
        (302, {}, TransientError, "http_302", "HTTP 302"),
    ],
)
async def test_error_answers(
    http_status: int,
    body: dict[str, Any],
    error_type: type[ProviderError],
    code: str,
    message: str,
) -> None:
    harness = harness_for(reply(body, status=http_status))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code
    assert error.message == message
    assert error.raw == body


@pytest.mark.parametrize(
    ("body", "headers", "code", "retry_after"),
    [
        (detail("too_many_concurrent_requests"), {}, "too_many_concurrent_requests", None),
        (detail("system_busy"), {"Retry-After": "20"}, "system_busy", 20.0),
        ({"detail": "Too Many Requests"}, {"Retry-After": "3"}, "http_429", 3.0),
    ],
)
async def test_rate_limited(
    body: dict[str, Any], headers: dict[str, str], code: str, retry_after: float | None
) -> None:
    harness = harness_for(reply(body, status=429, headers=headers))

    error = await poll_error(harness)

    assert type(error) is RateLimited
    assert error.code == code
    assert error.retry_after_s == retry_after


@pytest.mark.parametrize(
    ("http_status", "text", "error_type", "code"),
    [
        (502, HTML_ERROR_PAGE, TransientError, "http_502"),
        (429, "Too Many Requests", RateLimited, "http_429"),
        (401, "Unauthorized", CredentialError, "http_401"),
        (404, "<html>404</html>", TransientError, "http_404"),
        (200, HTML_ERROR_PAGE, TransientError, "malformed_response"),
        (200, '{"dubbing_id": "x", "status": "dub', TransientError, "malformed_response"),
        (200, "[]", TransientError, "malformed_response"),
        (200, "", TransientError, "malformed_response"),
    ],
)
async def test_bodies_that_are_not_json_objects(
    http_status: int, text: str, error_type: type[ProviderError], code: str
) -> None:
    harness = harness_for(reply(text=text, status=http_status))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code


@pytest.mark.parametrize(
    "body",
    [
        dub(status=None),
        dub(status=3),
        dub(status=["dubbed"]),
        {"dubbing_id": DUBBING_ID},
        # dubbing_id must name this dub, as a string: anything else is not its answer.
        dub(status="dubbed", dubbing_id="someone-else"),
        dub(status="dubbed", dubbing_id=None),
        dub(status="failed", dubbing_id=DUBBING_ID.lower()),
        dub(status="dubbed", dubbing_id=[DUBBING_ID]),
        {"status": "dubbed", "target_languages": ["es"]},
        # A dubbed answer's languages build the file URLs: each one a code, one segment.
        dub(status="dubbed", target_languages="es"),
        dub(status="dubbed", target_languages=None),
        dub(status="dubbed", target_languages=["es", 3]),
        dub(status="dubbed", target_languages=["es", ""]),
        dub(status="dubbed", target_languages=[".."]),
        dub(status="dubbed", target_languages=["es/../../user"]),
        dub(status="dubbed", target_languages=["x" * 65]),
    ],
)
async def test_wrong_shapes_are_malformed(body: dict[str, Any]) -> None:
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


async def test_the_result_reads_back_from_storage() -> None:
    outcome = await poll(harness_for(reply(DUBBED)))
    assert outcome.result is not None

    stored = outcome.result.model_dump(mode="json")

    assert stored["kind"] == "elevenlabs_dubbing"
    assert read_result(stored) == outcome.result


async def test_result_files_are_none_while_the_archive_cannot_send_the_key() -> None:
    """The dub's URLs answer 401 without `xi-api-key`, and the archive copies without auth:
    handing them over would archive an error page as the audio."""
    outcome = await poll(harness_for(reply(DUBBED)))
    assert outcome.result is not None

    files = ElevenLabsDubbingAdapter().result_files(outcome.result, datetime.now(UTC))

    assert files == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("21m00Tcm4TlvDq8ikWAM", "21m00Tcm4TlvDq8ikWAM"),
        ("db3a2f0b1c2d4e5f8a9b0c1d2e3f4a5b", "db3a2f0b1c2d4e5f8a9b0c1d2e3f4a5b"),
        ("a..b", "a..b"),
        ("x" * 256, "x" * 256),
    ],
)
def test_normalize_id_accepts(raw: object, expected: str) -> None:
    assert ElevenLabsDubbingAdapter().normalize_id(raw) == expected


@pytest.mark.parametrize(
    "raw", [None, 12345, True, "", ".", "..", "a/b", "a\\b", "a b", "x\u202e", "x" * 257, ["id"]]
)
def test_normalize_id_refuses(raw: object) -> None:
    with pytest.raises(InvalidExternalId):
        ElevenLabsDubbingAdapter().normalize_id(raw)


def test_auth_header_is_xi_api_key() -> None:
    assert ElevenLabsDubbingAdapter().auth_headers("k") == {"xi-api-key": "k"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"dubbing_id": DUBBING_ID, "status": "dubbed"},
        {"type": "dubbing_completed", "data": {"dubbing_id": DUBBING_ID}},
        {"type": "post_call_transcription", "data": {"conversation_id": "c1"}},
    ],
)
def test_no_callback_names_a_dub(body: dict[str, Any]) -> None:
    """ElevenLabs' webhooks have no dubbing event: whatever arrives names no task."""
    adapter = ElevenLabsDubbingAdapter()

    assert adapter.callbacks is CallbackSigning.NONE
    assert adapter.callback_id(body, {}) is None
