"""Jimmy AI SoundClone adapter against every documented answer shape (docs/providers.md)."""

from __future__ import annotations

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
from app.providers.jimmy_soundclone import JimmySoundCloneAdapter, JimmySoundCloneResult
from app.providers.registry import adapter_for
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

TASK_ID = "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a"
BASE_URL = "https://www.jimmy.test"
AUDIO_URL = "https://example.com/generated-audio.mp3"
PATH = f"/api/open-api/v1/audios/{TASK_ID}"

# The seed page's examples, verbatim.
PROCESSING: dict[str, Any] = {
    "code": 20000,
    "msg": "ok",
    "data": {
        "id": TASK_ID,
        "object": "audio",
        "created": 1781777280,
        "model": "soundCloningClone",
        "status": "processing",
        "error": None,
    },
}
CLONE_COMPLETED: dict[str, Any] = {
    "code": 20000,
    "msg": "ok",
    "data": {
        "id": TASK_ID,
        "object": "audio",
        "created": 1781777280,
        "model": "soundCloningClone",
        "status": "completed",
        "modelId": "model_123456789",
        "audioUrl": "https://example.com/preview-audio.mp3",
        "error": None,
    },
}
AUDIO_COMPLETED: dict[str, Any] = {
    "code": 20000,
    "msg": "ok",
    "data": {
        "id": TASK_ID,
        "object": "audio",
        "created": 1781777280,
        "model": "soundCloningAudio",
        "status": "completed",
        "audioUrl": "https://example.com/generated-audio.mp3",
        "subtitleFile": "https://example.com/subtitle.srt",
        "error": None,
    },
}


def envelope(code: Any = 20000, msg: Any = "ok", **data: Any) -> dict[str, Any]:
    base = {"id": TASK_ID, "object": "audio", "created": 1781777280, "model": "soundCloningAudio"}
    return {"code": code, "msg": msg, "data": {**base, **data}}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.JIMMY_SOUNDCLONE, base_url=BASE_URL)


async def poll(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> PollOutcome:
    return await JimmySoundCloneAdapter().poll(harness.upstream, context or PollContext(task_id))


async def poll_error(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, task_id, context)
    return caught.value


def result(audio_url: str, model_id: str | None = None, subtitle_url: str | None = None) -> Any:
    return JimmySoundCloneResult(
        kind="jimmy_soundclone", audio_url=audio_url, model_id=model_id, subtitle_url=subtitle_url
    )


def test_registry_serves_this_adapter() -> None:
    adapter = adapter_for(ProviderKind.JIMMY_SOUNDCLONE)

    assert isinstance(adapter, JimmySoundCloneAdapter)
    assert adapter.kind is ProviderKind.JIMMY_SOUNDCLONE
    assert adapter_for(ProviderKind.JIMMY_SOUNDCLONE) is adapter


async def test_query_request_is_exact() -> None:
    harness = harness_for(reply(PROCESSING))

    outcome = await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{PATH}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert outcome == PollOutcome(TaskStatus.PROCESSING, "processing", raw=PROCESSING)
    assert harness.slots == 1


async def test_an_id_with_url_syntax_is_one_path_segment() -> None:
    task_id = "a..b?c=1#d%"
    body = envelope(status="queued", id=task_id)
    harness = harness_for(reply(body))

    outcome = await poll(harness, task_id)

    assert outcome.status is TaskStatus.QUEUED
    [request] = harness.requests
    assert request.url.raw_path == b"/api/open-api/v1/audios/a..b%3Fc%3D1%23d%25"
    assert request.url.query == b""


@pytest.mark.parametrize(
    "task_id", [".", "..", "...", "a/b", "../x", "a\\b", "audio_\u202e1", "x\u2028", "x\x85", " x"]
)
async def test_a_stored_id_that_would_leave_the_path_fails_the_task_unsent(task_id: str) -> None:
    """Ids registered before registration refused these: `..` would send the keyed GET to
    /api/open-api/v1 and take its answer for the task's."""
    harness = harness_for(reply(envelope(status="completed", id=task_id, audioUrl=AUDIO_URL)))

    error = await poll_error(harness, task_id)

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert error.message.startswith("external_id must")
    assert harness.requests == []
    assert harness.slots == 0


@pytest.mark.parametrize("code", [20000, "20000"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", TaskStatus.QUEUED),
        ("pending", TaskStatus.QUEUED),
        ("submitted", TaskStatus.QUEUED),
        ("processing", TaskStatus.PROCESSING),
        ("Processing", TaskStatus.PROCESSING),
        ("QUEUED", TaskStatus.QUEUED),
    ],
)
async def test_running_statuses(code: Any, status: str, expected: TaskStatus) -> None:
    body = envelope(code, status=status)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(expected, status, raw=body)
    assert harness.slots == 1


@pytest.mark.parametrize("code", [20000, "20000"])
async def test_completed_clone_preview(code: Any) -> None:
    body = {**CLONE_COMPLETED, "code": code}
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(
        TaskStatus.SUCCEEDED,
        "completed",
        result=result("https://example.com/preview-audio.mp3", model_id="model_123456789"),
        raw=body,
    )
    assert harness.slots == 1


@pytest.mark.parametrize("status", ["completed", "success", "Completed", "SUCCESS"])
async def test_completed_audio_with_subtitles(status: str) -> None:
    body = {**AUDIO_COMPLETED, "data": {**AUDIO_COMPLETED["data"], "status": status}}
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.upstream_status == status
    assert outcome.result == result(
        "https://example.com/generated-audio.mp3", subtitle_url="https://example.com/subtitle.srt"
    )


@pytest.mark.parametrize(
    ("model", "fields", "expected"),
    [
        ("soundCloningClone", {"audioUrl": AUDIO_URL, "modelId": "m1"}, result(AUDIO_URL, "m1")),
        ("soundCloningAudio", {"audioUrl": AUDIO_URL}, result(AUDIO_URL)),
        # Extras a model does not promise are carried when they are valid.
        (
            "soundCloningAudio",
            {"audioUrl": AUDIO_URL, "modelId": "m1", "subtitleFile": AUDIO_URL + ".srt"},
            result(AUDIO_URL, "m1", AUDIO_URL + ".srt"),
        ),
        # A missing or unknown model: the audio is what every SoundClone task produces.
        (None, {"audioUrl": AUDIO_URL}, result(AUDIO_URL)),
        ("soundCloningSomethingNew", {"audioUrl": AUDIO_URL}, result(AUDIO_URL)),
    ],
)
async def test_completed_carries_what_its_model_produces(
    model: str | None, fields: dict[str, Any], expected: JimmySoundCloneResult
) -> None:
    harness = harness_for(reply(envelope(status="completed", model=model, **fields)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert outcome.result == expected


@pytest.mark.parametrize(
    ("model", "fields", "missing"),
    [
        # The bug: either field used to be enough, so an audio task succeeded with no audio.
        ("soundCloningAudio", {"modelId": "model_1"}, "audioUrl"),
        ("soundCloningAudio", {"audioUrl": "", "modelId": "model_1"}, "audioUrl"),
        ("soundCloningAudio", {"subtitleFile": "https://example.com/s.srt"}, "audioUrl"),
        ("soundCloningAudio", {"audioUrl": None}, "audioUrl"),
        ("soundCloningClone", {"modelId": "model_1"}, "audioUrl"),
        ("soundCloningClone", {"audioUrl": AUDIO_URL}, "modelId"),
        ("soundCloningClone", {"audioUrl": AUDIO_URL, "modelId": ""}, "modelId"),
        ("soundCloningClone", {}, "audioUrl and modelId"),
        (None, {"modelId": "model_1"}, "audioUrl"),
        ("soundCloningSomethingNew", {}, "audioUrl"),
    ],
)
async def test_completed_without_what_its_model_produces_is_not_ready(
    model: str | None, fields: dict[str, Any], missing: str
) -> None:
    harness = harness_for(reply(envelope(status="completed", model=model, **fields)))
    context = PollContext(TASK_ID)

    error = await poll_error(harness, context=context)

    assert type(error) is ResultNotReady
    assert error.code == "result_not_ready"
    assert f"completed without {missing}," in error.message
    assert f"(poll 1 of at most {RESULT_NOT_READY_POLLS})" in error.message
    assert context.checkpoint == {"not_ready": 1}


async def test_an_incomplete_completed_fails_the_task_after_the_bound() -> None:
    harness = harness_for(reply(envelope(status="completed", model="soundCloningAudio")))
    context = PollContext(TASK_ID)

    errors = [await poll_error(harness, context=context) for _ in range(RESULT_NOT_READY_POLLS)]

    assert [type(e) for e in errors] == [ResultNotReady] * (RESULT_NOT_READY_POLLS - 1) + [
        TaskError
    ]
    assert errors[-1].code == "incomplete_result"
    assert errors[-1].message == (
        "completed without audioUrl, which soundCloningAudio produces, "
        f"{RESULT_NOT_READY_POLLS} polls in a row"
    )
    assert errors[-1].raw == envelope(status="completed", model="soundCloningAudio")


async def test_a_complete_answer_after_incomplete_ones_succeeds() -> None:
    harness = harness_for(reply(envelope(status="completed", audioUrl=AUDIO_URL)))
    context = PollContext(TASK_ID, checkpoint={"not_ready": RESULT_NOT_READY_POLLS - 1})

    outcome = await poll(harness, context=context)

    assert outcome.result == result(AUDIO_URL)


@pytest.mark.parametrize("status", ["processing", "queued", "rendering"])
async def test_a_running_answer_resets_the_count(status: str) -> None:
    harness = harness_for(reply(envelope(status=status)))
    context = PollContext(TASK_ID, checkpoint={"not_ready": 5})

    await poll(harness, context=context)

    assert context.checkpoint is None


@pytest.mark.parametrize("count", [None, "7", True, [1], 2.5])
async def test_a_count_it_did_not_write_starts_again(count: Any) -> None:
    harness = harness_for(reply(envelope(status="completed")))
    context = PollContext(TASK_ID, checkpoint={"not_ready": count})

    error = await poll_error(harness, context=context)

    assert error.code == "result_not_ready"
    assert context.checkpoint == {"not_ready": 1}


@pytest.mark.parametrize(
    "fields",
    [
        {"audioUrl": "javascript:alert(1)"},
        {"audioUrl": ["https://example.com/a.mp3"]},
        {"audioUrl": "https://example.com/a.mp3", "modelId": 123},
        {"audioUrl": "https://example.com/a.mp3", "modelId": "m" * 300},
    ],
)
async def test_completed_with_a_malformed_result_field(fields: dict[str, Any]) -> None:
    harness = harness_for(reply(envelope(status="completed", **fields)))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "malformed_response"


async def test_a_bad_subtitle_file_does_not_hold_back_the_audio() -> None:
    harness = harness_for(
        reply(envelope(status="completed", audioUrl="https://example.com/a.mp3", subtitleFile=7))
    )

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome.result == result("https://example.com/a.mp3")
    assert [entry["event"] for entry in logs] == ["provider.bad_subtitle_file"]


@pytest.mark.parametrize(
    ("fields", "msg", "message"),
    [
        ({"error": "audio file too short"}, "ok", "audio file too short"),
        ({"error": None, "error_message": "insufficient balance"}, "ok", "insufficient balance"),
        ({"error": "  ", "error_msg": "bad input"}, "ok", "bad input"),
        ({"reason": "content rejected"}, "ok", "content rejected"),
        ({"error": None}, "ok", "the provider reported a failure"),
        ({"error": {"nested": True}}, "ok", "the provider reported a failure"),
        # error null: the envelope's msg explains it, unless it is the generic one.
        ({"error": None}, "source audio shorter than 15 s", "source audio shorter than 15 s"),
        ({}, "  insufficient balance ", "insufficient balance"),
        ({"error": "voice rejected"}, "something else", "voice rejected"),
        ({"error": None}, "OK", "the provider reported a failure"),
        ({"error": None}, "Success", "the provider reported a failure"),
        ({"error": None}, "", "the provider reported a failure"),
        ({"error": None}, None, "the provider reported a failure"),
        ({"error": None}, 20000, "the provider reported a failure"),
    ],
)
async def test_failed(fields: dict[str, Any], msg: Any, message: str) -> None:
    body = envelope(msg=msg, status="failed", **fields)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(
        TaskStatus.FAILED, "failed", error={"code": "failed", "message": message}, raw=body
    )


@pytest.mark.parametrize("status", ["canceled", "cancelled", "Cancelled"])
async def test_cancelled_upstream_is_a_failure(status: str) -> None:
    harness = harness_for(reply(envelope(status=status, error="cancelled by operator")))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.FAILED
    assert outcome.error == {"code": "cancelled_upstream", "message": "cancelled by operator"}


async def test_cancelled_without_a_reason() -> None:
    harness = harness_for(reply(envelope(status="canceled")))

    outcome = await poll(harness)

    assert outcome.error == {
        "code": "cancelled_upstream",
        "message": "the provider cancelled the task",
    }


@pytest.mark.parametrize("status", ["rendering", "", "timeout"])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    body = envelope(status=status)
    harness = harness_for(reply(body))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome == PollOutcome(None, status, raw=body)
    assert logs == [
        {
            "event": "provider.unknown_status",
            "log_level": "warning",
            "kind": "jimmy_soundclone",
            "upstream_status": status,
        }
    ]


@pytest.mark.parametrize(
    ("code", "http_status", "error_type"),
    [
        (20001, 200, CredentialError),
        ("20001", 200, CredentialError),
        (20001, 401, CredentialError),
        (20002, 200, TaskError),
        ("20002", 400, TaskError),
        (20002, 404, TaskError),
        (20002, 500, TaskError),
        (-1, 200, TransientError),
        ("-1", 200, TransientError),
        (12345, 200, TransientError),
        ("E_SOMETHING", 200, TransientError),
        (20000.0, 200, TransientError),
        (True, 200, TransientError),
    ],
)
async def test_envelope_codes(code: Any, http_status: int, error_type: type[ProviderError]) -> None:
    body = {"code": code, "msg": "explained", "data": None}
    harness = harness_for(reply(body, status=http_status))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == str(code)
    assert error.message == "explained"
    assert error.raw == body
    assert harness.slots == 1


async def test_an_envelope_without_msg_gets_a_generic_message() -> None:
    harness = harness_for(reply({"code": -1, "data": None}))

    error = await poll_error(harness)

    assert error.message == "code -1"


@pytest.mark.parametrize(
    ("body", "http_status", "headers", "error_type", "code"),
    [
        ({"code": -1, "msg": "slow down"}, 429, {"Retry-After": "20"}, RateLimited, "http_429"),
        (None, 429, {"Retry-After": "20"}, RateLimited, "http_429"),
        ({"code": -1, "msg": "server error"}, 503, {}, TransientError, "http_503"),
        ({"code": 20000, "data": {"status": "completed"}}, 500, {}, TransientError, "http_500"),
        ({"code": -1, "msg": "?"}, 401, {}, CredentialError, "http_401"),
        ({"message": "Unauthorized"}, 401, {}, CredentialError, "http_401"),
        ({"message": "Forbidden"}, 403, {}, CredentialError, "http_403"),
        ({"message": "Not Found"}, 404, {}, TransientError, "http_404"),
        ({"code": 20000, "data": {"status": "queued"}}, 302, {}, TransientError, "http_302"),
        ({"message": "no code"}, 200, {}, TransientError, "malformed_response"),
        (
            {"code": None, "data": {"status": "queued"}},
            200,
            {},
            TransientError,
            "malformed_response",
        ),
    ],
)
async def test_http_status_where_the_envelope_says_nothing_specific(
    body: Any,
    http_status: int,
    headers: dict[str, str],
    error_type: type[ProviderError],
    code: str,
) -> None:
    harness = harness_for(reply(body, status=http_status, headers=headers))

    error = await poll_error(harness)

    assert type(error) is error_type
    assert error.code == code
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 20.0


@pytest.mark.parametrize(
    ("http_status", "text", "code"),
    [
        (502, HTML_ERROR_PAGE, "http_502"),
        (200, HTML_ERROR_PAGE, "malformed_response"),
        (200, '{"code": 20000, "msg": "ok", "data": {"status": "compl', "malformed_response"),
        (200, '[{"code": 20000}]', "malformed_response"),
        (200, "", "malformed_response"),
        (404, "<html>404</html>", "http_404"),
    ],
)
async def test_bodies_that_are_not_json_objects(http_status: int, text: str, code: str) -> None:
    harness = harness_for(reply(text=text, status=http_status))

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == code


@pytest.mark.parametrize(
    "body",
    [
        {"code": 20000, "msg": "ok", "data": None},
        {"code": 20000, "msg": "ok"},
        {"code": 20000, "msg": "ok", "data": [PROCESSING["data"]]},
        {"code": 20000, "msg": "ok", "data": "processing"},
        envelope(status=None),
        envelope(status=3),
        envelope(status=["completed"]),
        {"code": 20000, "msg": "ok", "data": {"id": TASK_ID}},
        # data.id must name this task, as a string: anything else is not its answer.
        envelope(status="completed", id="audio_someone-else", audioUrl=AUDIO_URL),
        envelope(status="completed", id=12345, audioUrl=AUDIO_URL),
        envelope(status="completed", id=None, audioUrl=AUDIO_URL),
        envelope(status="completed", id=[TASK_ID], audioUrl=AUDIO_URL),
        envelope(status="completed", id=TASK_ID.upper(), audioUrl=AUDIO_URL),
        envelope(status="completed", id=TASK_ID + " ", audioUrl=AUDIO_URL),
        {
            "code": 20000,
            "msg": "ok",
            "data": {"status": "completed", "model": "soundCloningAudio", "audioUrl": AUDIO_URL},
        },
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
    assert harness.slots == 1


async def test_huge_body_is_refused() -> None:
    harness = harness_for(lambda _: httpx.Response(200, content=b"{" * (2 * 1024 * 1024)))

    error = await poll_error(harness)

    assert error.code == "response_too_large"
