"""AssemblyAI pre-recorded transcripts: one GET per poll, the transcript itself in the answer.

The facts relied on here, with their sources, are in docs/providers.md ("AssemblyAI
transcripts"). Errors come as `{"error": "..."}` with an HTTP status; a transcript that
failed answers HTTP 200 with `status: error` and its reason in `error`.

A completed answer holds every word with its timing (and every utterance's words again
with speaker labels): megabytes for a long recording. The query is read up to
MAX_TRANSCRIPT_BYTES instead of the shared 1 MiB, and the typed result keeps what most
consumers need (the text, the utterances without their words, a word count); the words
stay at AssemblyAI, fetched by id while it keeps the transcript.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.core.config import ProviderKind
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CallbackSigning,
    PollContext,
    PollOutcome,
    ProviderResult,
    ResultFile,
    TaskError,
    TransientError,
    Upstream,
    cap_raw,
    require_canonical,
    result_not_ready,
)
from app.providers.external_ids import InvalidExternalId, id_text
from app.providers.http import (
    clip,
    finite_number,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    unexpected_status,
)

QUERY_PATH = "/v2/transcript/"
# About 30 KB per minute of speech with speaker labels (each word ~90 bytes, twice): 10
# hours, the longest audio AssemblyAI takes, is some 18 MB; 32 MiB leaves room for more.
MAX_TRANSCRIPT_BYTES = 32 * 1024 * 1024
MAX_ID_CHARS = 64
# What AssemblyAI writes: UUIDs (`9ea68fd3-f953-42c1-9742-976c447fb463`) and, on older
# transcripts, a 10-character prefix in place of the first group
# (`64nygnr62k-405c-4ae8-8a6b-d90b40ff3cce`): lowercase letters and digits in groups
# joined by single hyphens.
_ID = re.compile(r"[0-9a-z]+(?:-[0-9a-z]+)*")
# What a transcript deleted through DELETE /v2/transcript/{id} answers in place of its media.
DELETED_AUDIO_URL = "http://deleted_by_user"
# 400 (transcript id not found, bad request) and 404 with AssemblyAI's own `{"error": ...}`
# body are about the task; without that body they may be a proxy's, and stay transient.
_TASK_HTTP_STATUSES = frozenset({400, 404})
_STATUSES = {
    "queued": TaskStatus.QUEUED,
    "processing": TaskStatus.PROCESSING,
}
_FAILED_DEFAULT = "the provider reported a transcription error"
_DELETED_DEFAULT = "the transcript was deleted at AssemblyAI"

T = TypeVar("T")

logger = get_logger(__name__)


class AssemblyAIUtterance(BaseModel):
    """One speaker's turn, as AssemblyAI's `utterances` gives it, without its words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speaker: str | None = Field(
        None, description="The speaker's label (`A`, `B`, ...; the channel's with multichannel)."
    )
    text: str = Field(description="What the speaker said in this turn.")
    start: int = Field(description="Where the turn starts in the audio, in milliseconds.")
    end: int = Field(description="Where the turn ends in the audio, in milliseconds.")
    confidence: float | None = Field(
        None, description="AssemblyAI's confidence in the turn's text, 0 to 1."
    )


class AssemblyAIResult(ProviderResult):
    """A completed AssemblyAI transcript: its text and what describes it. The word-level
    timings are not carried (they can be megabytes): GET /v2/transcript/{id} has them while
    AssemblyAI keeps the transcript."""

    kind: Literal["assemblyai"] = Field(description="The provider kind.")
    text: str = Field(
        description="`text`: the whole transcript (empty when the audio held no speech)."
    )
    language_code: str | None = Field(
        None,
        description="`language_code`: the language transcribed (given or detected), e.g. `en_us`.",
        examples=["en_us"],
    )
    audio_duration: float | None = Field(
        None, description="`audio_duration`: the media's length in seconds."
    )
    confidence: float | None = Field(
        None, description="`confidence`: AssemblyAI's confidence in the transcript, 0 to 1."
    )
    audio_url: str | None = Field(
        None,
        description="`audio_url`: the media that was transcribed (the submitter's URL, or "
        "AssemblyAI's upload URL). Not a result file: it is not archived.",
    )
    speech_model_used: str | None = Field(
        None, description="`speech_model_used`: the speech model that transcribed it."
    )
    word_count: int | None = Field(
        None,
        description="How many entries `words` holds (the words themselves are not carried); "
        "null when AssemblyAI gave no list.",
    )
    utterances: list[AssemblyAIUtterance] | None = Field(
        None,
        description="`utterances` without their words: the speaker turns, present when the "
        "transcript was made with speaker_labels or multichannel; null otherwise.",
    )


class AssemblyAIAdapter:
    kind: ProviderKind = ProviderKind.ASSEMBLYAI
    requests_per_success: int = 0

    def normalize_id(self, raw: object) -> str:
        raw = id_text(raw, MAX_ID_CHARS, what="an AssemblyAI transcript id")
        # AssemblyAI writes its ids in lowercase; an uppercased UUID is the same id.
        text = raw.lower() if raw.isascii() else raw
        if not _ID.fullmatch(text):
            raise InvalidExternalId(
                "must be an AssemblyAI transcript id: letters and digits in groups joined "
                "by single hyphens (e.g. 9ea68fd3-f953-42c1-9742-976c447fb463)"
            )
        return text

    def auth_headers(self, key: str) -> dict[str, str]:
        # The raw key, without a scheme, as AssemblyAI documents.
        return {"Authorization": key}

    # AssemblyAI POSTs `{"transcript_id", "status"}` to the submission's webhook_url; its
    # only proof is a header the submitter names (webhook_auth_header_name/value), which
    # pollhook cannot tell the submitter: the token travels in the URL pollhook hands out.
    callbacks: CallbackSigning = CallbackSigning.TOKEN

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        # The redacted-audio notification, sent to the same URL, names no transcript.
        try:
            return self.normalize_id(body.get("transcript_id"))
        except InvalidExternalId:
            return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        # The transcript is in the result itself; audio_url is the input, not a result.
        assert isinstance(result, AssemblyAIResult)
        return []

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        external_id = context.external_id
        require_canonical(self.normalize_id, external_id)
        response = await upstream.get(QUERY_PATH + external_id, max_bytes=MAX_TRANSCRIPT_BYTES)
        body = _checked(response)
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", _trimmed(body))
        transcript_id = body.get("id")
        if not isinstance(transcript_id, str) or transcript_id.lower() != external_id:
            # An answer about another transcript (or none named) must not end this one.
            raise malformed(f"the answer is for id {clip(repr(transcript_id))}", _trimmed(body))
        raw = cap_raw(_trimmed(body))
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "error":
            error = {"code": "failed", "message": _message(body) or _FAILED_DEFAULT}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized == "completed":
            if body.get("audio_url") == DELETED_AUDIO_URL:
                # Deleted before pollhook read it: the transcript is gone for good.
                error = {"code": "deleted_upstream", "message": _DELETED_DEFAULT}
                return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
            return PollOutcome(
                TaskStatus.SUCCEEDED, shown, result=_result(body, context, raw), raw=raw
            )
        # Still running: a completed answer without its text earlier was not the end.
        context.checkpoint = None
        mapped = _STATUSES.get(normalized)
        if mapped is None:
            logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(mapped, shown, raw=raw)


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The body of a 2xx answer; raises the matching ProviderError otherwise."""
    raise_for_http_status(response)
    if response.is_success:
        return json_object(response)
    try:
        body = json_object(response)
    except TransientError:
        raise unexpected_status(response) from None
    message = body.get("error")
    if response.status_code in _TASK_HTTP_STATUSES and isinstance(message, str) and message:
        raise TaskError(
            clip(message.strip(), 500), code=f"http_{response.status_code}", raw=cap_raw(body)
        )
    raise unexpected_status(response)


def _trimmed(body: dict[str, Any]) -> dict[str, Any]:
    """The answer as kept for diagnosis: the transcript's bulk (its text, words and
    utterances) would only crowd out the fields that explain it under cap_raw's limit."""
    kept = {k: v for k, v in body.items() if k not in ("text", "words", "utterances")}
    for name in ("text", "words", "utterances"):
        value = body.get(name)
        if isinstance(value, str | list):
            kept[name] = f"({len(value)} {'characters' if isinstance(value, str) else 'items'})"
        elif name in body:
            kept[name] = value
    return kept


def _result(body: dict[str, Any], context: PollContext, raw: dict[str, Any]) -> AssemblyAIResult:
    """A completed transcript's result. `text` is what completion promises: without it the
    answer is retried as not ready, and fails the task with incomplete_result after
    RESULT_NOT_READY_POLLS polls. The other fields describe it: one of a wrong type is
    left out with a log line rather than holding back the text."""
    text = body.get("text")
    if text is None:
        raise result_not_ready(
            context, "completed without text", final_code="incomplete_result", raw=raw
        )
    if not isinstance(text, str):
        raise malformed("text is not a string", raw)
    words = _optional(body, "words", list)
    audio_url = _optional(body, "audio_url", str)
    if audio_url is not None and not is_http_url(audio_url):
        _dropped("audio_url", audio_url)
        audio_url = None
    return AssemblyAIResult(
        kind="assemblyai",
        text=text,
        language_code=_optional(body, "language_code", str),
        audio_duration=_number(body, "audio_duration"),
        confidence=_number(body, "confidence"),
        audio_url=audio_url,
        speech_model_used=_optional(body, "speech_model_used", str),
        word_count=None if words is None else len(words),
        utterances=_utterances(body),
    )


def _optional(body: dict[str, Any], name: str, kind: type[T]) -> T | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    _dropped(name, value)
    return None


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    number = finite_number(value)
    if number is not None:
        return number
    _dropped(name, value)
    return None


def _utterances(body: dict[str, Any]) -> list[AssemblyAIUtterance] | None:
    items = _optional(body, "utterances", list)
    if items is None:
        return None
    turns = []
    for item in items:
        if not isinstance(item, dict):
            _dropped("utterances", item)
            return None
        fields = {k: item.get(k) for k in ("speaker", "text", "start", "end", "confidence")}
        try:
            turns.append(AssemblyAIUtterance.model_validate(fields, strict=True))
        except ValueError:
            _dropped("utterances", item)
            return None
    return turns


def _dropped(name: str, value: Any) -> None:
    logger.warning(
        "provider.bad_result_field",
        kind=ProviderKind.ASSEMBLYAI.value,
        field=name,
        value=clip(repr(value)),
    )


def _message(body: dict[str, Any]) -> str | None:
    value = body.get("error")
    if isinstance(value, str) and value.strip():
        return clip(value.strip(), 500)
    return None
