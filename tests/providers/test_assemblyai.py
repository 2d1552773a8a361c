"""AssemblyAI transcripts adapter against every documented answer shape (docs/providers.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from app.core.config import ProviderKind
from app.models import TaskStatus
from app.providers.assemblyai import (
    MAX_TRANSCRIPT_BYTES,
    AssemblyAIAdapter,
    AssemblyAIResult,
    AssemblyAIUtterance,
)
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
from app.providers.external_ids import InvalidExternalId
from app.providers.http import MAX_RESPONSE_BYTES
from app.providers.registry import adapter_for, read_result
from tests.providers import API_KEY, HTML_ERROR_PAGE, Handler, Harness, make_harness, raising, reply

TASK_ID = "9ea68fd3-f953-42c1-9742-976c447fb463"
BASE_URL = "https://api.assemblyai.test"
PATH = f"/v2/transcript/{TASK_ID}"
AUDIO_URL = "https://assembly.ai/wildfires.mp3"
WORDS = [
    {"text": "Smoke", "start": 250, "end": 650, "confidence": 0.97465, "speaker": None},
    {"text": "from", "start": 730, "end": 1022, "confidence": 0.99999, "speaker": None},
]


def transcript(status: str = "completed", **fields: Any) -> dict[str, Any]:
    """The transcript resource as the API reference's example gives it."""
    body: dict[str, Any] = {
        "id": TASK_ID,
        "speech_model": None,
        "language_model": "assemblyai_default",
        "acoustic_model": "assemblyai_default",
        "language_code": "en_us",
        "language_detection": True,
        "language_confidence_threshold": 0.7,
        "language_confidence": 0.9959,
        "status": status,
        "audio_url": AUDIO_URL,
        "text": "Smoke from" if status == "completed" else None,
        "words": WORDS if status == "completed" else None,
        "utterances": None,
        "confidence": 0.9959 if status == "completed" else None,
        "audio_duration": 281 if status == "completed" else None,
        "speech_model_used": "universal-3-pro",
        "webhook_auth": False,
        "auto_highlights": False,
        "redact_pii": False,
        "summarization": False,
    }
    return {**body, **fields}


def harness_for(handler: Handler) -> Harness:
    return make_harness(handler, kind=ProviderKind.ASSEMBLYAI, base_url=BASE_URL)


async def poll(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> PollOutcome:
    return await AssemblyAIAdapter().poll(harness.upstream, context or PollContext(task_id))


async def poll_error(
    harness: Harness, task_id: str = TASK_ID, context: PollContext | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await poll(harness, task_id, context)
    return caught.value


def trimmed(body: dict[str, Any]) -> dict[str, Any]:
    """What the outcome keeps of an answer: the bulk replaced by its size."""
    kept = dict(body)
    for name, unit in (("text", "characters"), ("words", "items"), ("utterances", "items")):
        if isinstance(body.get(name), str | list):
            kept[name] = f"({len(body[name])} {unit})"
    return kept


def test_registry_serves_this_adapter() -> None:
    adapter = adapter_for(ProviderKind.ASSEMBLYAI)

    assert isinstance(adapter, AssemblyAIAdapter)
    assert adapter.requests_per_success == 0
    assert adapter.callbacks is CallbackSigning.TOKEN


async def test_query_request_is_exact() -> None:
    body = transcript("processing")
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    [request] = harness.requests
    assert str(request.url) == f"{BASE_URL}{PATH}"
    assert request.headers["Authorization"] == API_KEY  # the raw key, no scheme
    assert outcome == PollOutcome(TaskStatus.PROCESSING, "processing", raw=body)
    assert harness.slots == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", TaskStatus.QUEUED),
        ("processing", TaskStatus.PROCESSING),
        ("Queued", TaskStatus.QUEUED),
        ("PROCESSING", TaskStatus.PROCESSING),
    ],
)
async def test_running_statuses(status: str, expected: TaskStatus) -> None:
    body = transcript(status, throttled=status.lower() == "queued")
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    # AssemblyAI states neither a queue position nor an ETA.
    assert outcome == PollOutcome(expected, status, raw=body, ready_at=None)


async def test_completed_is_the_typed_transcript() -> None:
    body = transcript()
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(
        TaskStatus.SUCCEEDED,
        "completed",
        result=AssemblyAIResult(
            kind="assemblyai",
            text="Smoke from",
            language_code="en_us",
            audio_duration=281.0,
            confidence=0.9959,
            audio_url=AUDIO_URL,
            speech_model_used="universal-3-pro",
            word_count=2,
            utterances=None,
        ),
        raw=trimmed(body),
    )
    assert outcome.raw["words"] == "(2 items)"
    assert outcome.raw["text"] == "(10 characters)"


async def test_utterances_are_carried_without_their_words() -> None:
    utterances = [
        {"speaker": "A", "text": "Smoke", "start": 250, "end": 650, "confidence": 0.97,
         "words": WORDS[:1]},
        {"speaker": "B", "text": "from", "start": 730, "end": 1022, "confidence": 1,
         "words": WORDS[1:], "channel": None},
    ]  # fmt: skip
    harness = harness_for(reply(transcript(utterances=utterances)))

    outcome = await poll(harness)

    assert isinstance(outcome.result, AssemblyAIResult)
    assert outcome.result.utterances == [
        AssemblyAIUtterance(speaker="A", text="Smoke", start=250, end=650, confidence=0.97),
        AssemblyAIUtterance(speaker="B", text="from", start=730, end=1022, confidence=1.0),
    ]
    assert read_result(outcome.result.model_dump()) == outcome.result


async def test_empty_text_is_a_transcript_of_silence() -> None:
    harness = harness_for(reply(transcript(text="", words=[], confidence=None)))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert isinstance(outcome.result, AssemblyAIResult)
    assert (outcome.result.text, outcome.result.word_count) == ("", 0)


@pytest.mark.parametrize(
    ("fields", "dropped"),
    [
        ({"language_code": 7}, "language_code"),
        ({"audio_duration": "281"}, "audio_duration"),
        ({"audio_duration": True}, "audio_duration"),
        ({"confidence": [0.9]}, "confidence"),
        ({"audio_url": "file:///etc/passwd"}, "audio_url"),
        ({"speech_model_used": {"name": "x"}}, "speech_model_used"),
        ({"words": "Smoke from"}, "words"),
        ({"utterances": [{"speaker": "A", "text": 5, "start": 0, "end": 1}]}, "utterances"),
        ({"utterances": ["A: Smoke from"]}, "utterances"),
        ({"utterances": {"A": "Smoke from"}}, "utterances"),
    ],
)
async def test_a_mistyped_descriptive_field_is_dropped_not_the_text(
    fields: dict[str, Any], dropped: str
) -> None:
    harness = harness_for(reply(transcript(**fields)))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert outcome.status is TaskStatus.SUCCEEDED
    assert isinstance(outcome.result, AssemblyAIResult)
    assert outcome.result.text == "Smoke from"
    shown = {"words": "word_count"}.get(dropped, dropped)
    assert getattr(outcome.result, shown) is None
    assert [e["field"] for e in logs if e["event"] == "provider.bad_result_field"] == [dropped]


async def test_completed_without_text_is_not_ready_until_the_bound() -> None:
    harness = harness_for(reply(transcript(text=None, words=None)))
    context = PollContext(TASK_ID)

    for seen in range(1, RESULT_NOT_READY_POLLS):
        error = await poll_error(harness, context=context)
        assert type(error) is ResultNotReady
        assert f"poll {seen} of at most" in error.message
    error = await poll_error(harness, context=context)

    assert type(error) is TaskError
    assert error.code == "incomplete_result"
    assert error.message.startswith("completed without text")


async def test_a_running_answer_resets_the_not_ready_count() -> None:
    context = PollContext(TASK_ID, checkpoint={"not_ready": 5})

    await poll(harness_for(reply(transcript("processing"))), context=context)

    assert context.checkpoint is None


async def test_completed_with_text_of_another_type_is_malformed() -> None:
    error = await poll_error(harness_for(reply(transcript(text=["Smoke", "from"]))))

    assert type(error) is TransientError
    assert error.code == "malformed_response"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"error": "Download error, unable to access file at https://example.com/a.mp3"},
            "Download error, unable to access file at https://example.com/a.mp3",
        ),
        ({"error": "  "}, "the provider reported a transcription error"),
        ({"error": None}, "the provider reported a transcription error"),
        ({}, "the provider reported a transcription error"),
    ],
)
async def test_error_status_fails_the_task_with_its_reason(
    fields: dict[str, Any], message: str
) -> None:
    body = transcript("error", **fields)
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome == PollOutcome(
        TaskStatus.FAILED, "error", error={"code": "failed", "message": message}, raw=body
    )


async def test_a_transcript_deleted_upstream_has_expired() -> None:
    # The API reference's answer for a deleted transcript.
    body = transcript(
        audio_url="http://deleted_by_user",
        webhook_url="http://deleted_by_user",
        text="Deleted by user.",
        words=None,
        confidence=None,
    )
    harness = harness_for(reply(body))

    outcome = await poll(harness)

    assert outcome.status is TaskStatus.EXPIRED
    assert outcome.result is None
    assert outcome.error == {
        "code": "deleted_upstream",
        "message": "the transcript was deleted at AssemblyAI",
    }


@pytest.mark.parametrize("status", ["redacting", "", "canceled"])
async def test_unknown_status_keeps_the_task_as_is_and_warns(status: str) -> None:
    harness = harness_for(reply(transcript(status)))

    with capture_logs() as logs:
        outcome = await poll(harness)

    assert (outcome.status, outcome.upstream_status, outcome.result) == (None, status, None)
    [warning] = [e for e in logs if e["event"] == "provider.unknown_status"]
    assert warning["kind"] == "assemblyai"


@pytest.mark.parametrize(
    "body",
    [
        transcript(id="5552493-16d8-42d8-8feb-c2a16b56f6e8"),
        transcript(id=None),
        transcript(id=42),
        {k: v for k, v in transcript().items() if k != "id"},
        {**transcript(), "status": None},
        {**transcript(), "status": 2},
        {k: v for k, v in transcript().items() if k != "status"},
    ],
)
async def test_an_answer_about_another_or_no_transcript_is_malformed(body: dict[str, Any]) -> None:
    error = await poll_error(harness_for(reply(body)))

    assert type(error) is TransientError
    assert error.code == "malformed_response"


async def test_the_answer_id_is_compared_without_case() -> None:
    outcome = await poll(harness_for(reply(transcript(id=TASK_ID.upper()))))

    assert outcome.status is TaskStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("http_status", "body", "error_type", "code", "message"),
    [
        (401, {"error": "Authentication error, API token missing/invalid"}, CredentialError,
         "http_401", "HTTP 401: credentials refused"),
        (403, {"error": "Forbidden"}, CredentialError, "http_403", "HTTP 403: credentials refused"),
        (400, {"error": "Transcript lookup error, transcript id not found"}, TaskError,
         "http_400", "Transcript lookup error, transcript id not found"),
        (404, {"error": "Not found"}, TaskError, "http_404", "Not found"),
        (400, {"message": "bad"}, TransientError, "http_400", "unexpected HTTP 400"),
        (404, {"error": ""}, TransientError, "http_404", "unexpected HTTP 404"),
        (409, {"error": "Conflict"}, TransientError, "http_409", "unexpected HTTP 409"),
        (500, {"error": "Internal Server Error"}, TransientError, "http_500", "HTTP 500"),
        (503, None, TransientError, "http_503", "HTTP 503"),
        (504, None, TransientError, "http_504", "HTTP 504"),
        (408, None, TransientError, "http_408", "HTTP 408"),
    ],
)  # fmt: skip
async def test_http_errors_are_classified(
    http_status: int,
    body: Any,
    error_type: type[ProviderError],
    code: str,
    message: str,
) -> None:
    error = await poll_error(harness_for(reply(body, status=http_status)))

    assert type(error) is error_type
    assert (error.code, error.message) == (code, message)


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), (None, None)])
async def test_rate_limited_honours_retry_after(header: str | None, seconds: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else None
    harness = harness_for(reply({"error": "Too Many Requests"}, status=429, headers=headers))

    error = await poll_error(harness)

    assert type(error) is RateLimited
    assert error.retry_after_s == seconds
    assert error.code == "http_429"


@pytest.mark.parametrize(
    ("http_status", "text", "code"),
    [
        (200, "{not json", "malformed_response"),
        (200, "[]", "malformed_response"),
        (200, HTML_ERROR_PAGE, "malformed_response"),
        (404, HTML_ERROR_PAGE, "http_404"),
        (400, "Bad Request", "http_400"),
        (302, "", "http_302"),
        (502, HTML_ERROR_PAGE, "http_502"),
    ],
)
async def test_bodies_that_are_not_json_objects(http_status: int, text: str, code: str) -> None:
    error = await poll_error(harness_for(reply(status=http_status, text=text)))

    assert type(error) is TransientError
    assert error.code == code


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_network_failures_are_transient(exc: Exception) -> None:
    error = await poll_error(harness_for(raising(exc)))

    assert isinstance(error, TransientError)


async def test_a_transcript_past_the_shared_cap_is_read() -> None:
    """A long recording's answer is megabytes of words; the shared 1 MiB cap would retry it
    until the deadline."""
    many = [{**WORDS[0], "start": i, "end": i + 1} for i in range(MAX_RESPONSE_BYTES // 60)]
    body = transcript(words=many)
    assert len(json.dumps(body)) > MAX_RESPONSE_BYTES

    outcome = await poll(harness_for(reply(body)))

    assert isinstance(outcome.result, AssemblyAIResult)
    assert outcome.result.word_count == len(many)
    assert len(json.dumps(outcome.raw)) < 8 * 1024


async def test_a_body_past_the_transcript_cap_is_refused() -> None:
    harness = harness_for(
        reply(text="{}", headers={"Content-Length": str(MAX_TRANSCRIPT_BYTES + 1)})
    )

    error = await poll_error(harness)

    assert type(error) is TransientError
    assert error.code == "response_too_large"


@pytest.mark.parametrize(
    "task_id",
    ["..", "a/b", "9EA68FD3-f953-42c1-9742-976c447fb463", "x\u2028", "a?b", "", "-a"],
)
async def test_a_stored_id_that_is_not_canonical_fails_the_task_unsent(task_id: str) -> None:
    harness = harness_for(reply(transcript()))

    error = await poll_error(harness, task_id)

    assert type(error) is TaskError
    assert error.code == "invalid_external_id"
    assert (harness.requests, harness.slots) == ([], 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TASK_ID, TASK_ID),
        (TASK_ID.upper(), TASK_ID),
        ("64nygnr62k-405c-4ae8-8a6b-d90b40ff3cce", "64nygnr62k-405c-4ae8-8a6b-d90b40ff3cce"),
        ("5552493-16d8-42d8-8feb-c2a16b56f6e8", "5552493-16d8-42d8-8feb-c2a16b56f6e8"),
        ("abc", "abc"),
        ("a" * 64, "a" * 64),
    ],
)
def test_normalize_id_accepts_assemblyai_ids(raw: str, expected: str) -> None:
    assert AssemblyAIAdapter().normalize_id(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (123, "must be a string"),
        (None, "must be a string"),
        ("", "must not be empty"),
        ("a" * 65, "at most 64"),
        ("..", "groups joined by single hyphens"),
        ("a/b", "groups joined by single hyphens"),
        ("a--b", "groups joined by single hyphens"),
        ("-ab", "groups joined by single hyphens"),
        ("ab-", "groups joined by single hyphens"),
        ("a_b", "groups joined by single hyphens"),
        (" ab", "groups joined by single hyphens"),
        ("ab\n", "groups joined by single hyphens"),
        ("\u212aab", "groups joined by single hyphens"),  # KELVIN SIGN lowercases to k
        ("\uff41\uff42", "groups joined by single hyphens"),  # fullwidth a b
    ],
)
def test_normalize_id_refuses_what_is_no_assemblyai_id(raw: object, reason: str) -> None:
    with pytest.raises(InvalidExternalId, match=reason):
        AssemblyAIAdapter().normalize_id(raw)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"transcript_id": TASK_ID, "status": "completed"}, TASK_ID),
        ({"transcript_id": TASK_ID, "status": "error"}, TASK_ID),
        ({"transcript_id": TASK_ID.upper(), "status": "completed"}, TASK_ID),
        ({"transcript_id": TASK_ID}, TASK_ID),
        ({"status": "redacted_audio_ready", "redacted_audio_url": "https://s3.test/a.wav"}, None),
        ({"transcript_id": 42, "status": "completed"}, None),
        ({"transcript_id": "../v2/transcript", "status": "completed"}, None),
        ({"id": TASK_ID, "status": "completed"}, None),
        ({}, None),
    ],
)
def test_callback_id(body: dict[str, Any], expected: str | None) -> None:
    assert AssemblyAIAdapter().callback_id(body, {}) == expected


def test_auth_headers_carry_the_raw_key() -> None:
    assert AssemblyAIAdapter().auth_headers("k-1") == {"Authorization": "k-1"}


def test_the_result_has_no_files_to_archive() -> None:
    result = AssemblyAIResult(kind="assemblyai", text="x", audio_url=AUDIO_URL)

    assert AssemblyAIAdapter().result_files(result, datetime.now(UTC)) == []
