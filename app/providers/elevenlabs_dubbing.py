"""ElevenLabs dubbing: one GET per poll; the dub's files are behind the keyed API itself.

The facts relied on here, with their sources, are in docs/providers.md ("ElevenLabs
dubbing"). Errors come as `{"detail": {"status": <word>, "message": ...}}` with a plain HTTP
status, so the HTTP status decides the class and the word becomes the code.

A finished dub has no download link of its own: its audio and subtitles are fetched from
`/v1/dubbing/{id}/audio/{language}` and `/transcript/{language}` on the same host, with the
instance's key. The result lists those URLs on the instance's base URL, taken from the
query's own request so it always names the host that answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.core.config import ProviderKind
from app.core.http_client import retry_after_seconds
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CallbackSigning,
    CredentialError,
    PollContext,
    PollOutcome,
    ProviderResult,
    RateLimited,
    ResultFile,
    TaskError,
    TransientError,
    Upstream,
    cap_raw,
    require_canonical,
    result_not_ready,
)
from app.providers.external_ids import opaque_id, path_segment_problem
from app.providers.http import (
    clip,
    finite_number,
    json_object,
    malformed,
    raise_unless_success,
)

QUERY_PATH = "/v1/dubbing/"
# The 404 word for an id the key cannot see (or that never existed, or was deleted).
NOT_FOUND = "dubbing_not_found"
MAX_LANGUAGE_CHARS = 64
_FAILED_DEFAULT = "the provider reported the dub failed"

# The GET documents dubbing/dubbed/failed; the list filter adds queued and preparing (the
# media being readied once out of the queue: work has started).
_STATUSES = {
    "queued": TaskStatus.QUEUED,
    "preparing": TaskStatus.PROCESSING,
    "dubbing": TaskStatus.PROCESSING,
}

logger = get_logger(__name__)


class ElevenLabsDubbedLanguage(BaseModel):
    """One target language of a finished dub, and where its files are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str = Field(
        description="The target language's code as ElevenLabs gives it (ISO 639-1, e.g. `es`).",
        examples=["es"],
    )
    audio_url: str = Field(
        description="`GET /v1/dubbing/{dubbing_id}/audio/{language}` on the instance's base "
        "URL: the dubbed MP3 (or MP4 for video). Needs the instance's key in `xi-api-key`; "
        "it works until the dub is deleted."
    )
    transcript_url: str = Field(
        description="`GET /v1/dubbing/{dubbing_id}/transcript/{language}?format_type=srt`: the "
        "dub's subtitles as SRT. Needs the key like audio_url."
    )


class ElevenLabsDubbingResult(ProviderResult):
    """A finished ElevenLabs dub: its languages and where each one's files are."""

    kind: Literal["elevenlabs_dubbing"] = Field(description="The provider kind.")
    dubbing_id: str = Field(
        description="ElevenLabs' dubbing_id.", examples=["21m00Tcm4TlvDq8ikWAM"]
    )
    name: str | None = Field(None, description="The dubbing project's name; null if none.")
    source_language: str | None = Field(
        None,
        description="The ISO 639-1 code of the original media's language, once dubbing has "
        "completed; null when ElevenLabs gives none.",
    )
    media_content_type: str | None = Field(
        None,
        description="`media_metadata.content_type`: the dubbed content's type, e.g. "
        "`video/mp4` (whose dub is an MP4) or `audio/mpeg`. Null when not given.",
    )
    media_duration_s: float | None = Field(
        None,
        description="`media_metadata.duration`: the content's length in seconds. Null when "
        "not given.",
    )
    languages: list[ElevenLabsDubbedLanguage] = Field(
        description="Every target language, in ElevenLabs' order, with its file URLs. Those "
        "URLs need the instance's ElevenLabs key, so pollhook's archive does not copy them."
    )


class ElevenLabsDubbingAdapter:
    kind: ProviderKind = ProviderKind.ELEVENLABS_DUBBING
    requests_per_success: int = 0

    def normalize_id(self, raw: object) -> str:
        # dubbing_id is opaque text (the docs show `21m00Tcm4TlvDq8ikWAM`); it is a path
        # segment of the query.
        return opaque_id(raw)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"xi-api-key": key}

    # ElevenLabs' workspace webhooks have no dubbing event (docs/providers.md, "Callbacks").
    callbacks: CallbackSigning = CallbackSigning.NONE

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        # The dub's files answer only with the instance's key, and the archive fetches
        # without one: it would store ElevenLabs' 401 page as the audio. Left out until a
        # ResultFile can ask for the key (docs/providers.md, open question 1).
        assert isinstance(result, ElevenLabsDubbingResult)
        return []

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        external_id = context.external_id
        require_canonical(self.normalize_id, external_id)
        path = QUERY_PATH + quote(external_id, safe="")
        response = await upstream.get(path)
        body = _checked(response)
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", body)
        dubbing_id = body.get("dubbing_id")
        if not isinstance(dubbing_id, str) or dubbing_id != external_id:
            # An answer about something else (another dub, or none named) must not end
            # this one.
            raise malformed(f"the answer is for dubbing_id {clip(repr(dubbing_id))}", body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "dubbed":
            result = _result(body, _base_url(response, path), context)
            return PollOutcome(TaskStatus.SUCCEEDED, shown, result=result, raw=raw)
        # Not (or no longer) done: a dubbed answer without languages earlier was not the end.
        context.checkpoint = None
        if normalized == "failed":
            error = {"code": "failed", "message": _message(body)}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        mapped = _STATUSES.get(normalized)
        if mapped is None:
            logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(mapped, shown, raw=raw)


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The body of a 2xx answer; raises the matching ProviderError otherwise.

    The HTTP status decides the class; `detail.status` (`invalid_api_key`,
    `too_many_concurrent_requests`, `dubbing_not_found`, ...) names the code when given."""
    try:
        body = json_object(response)
    except TransientError:
        raise_unless_success(response)
        raise
    if response.is_success:
        return body
    http = response.status_code
    detail = body.get("detail")
    word = detail.get("status") if isinstance(detail, dict) else None
    word = clip(word.strip(), 100) if isinstance(word, str) and word.strip() else None
    text = detail.get("message") if isinstance(detail, dict) else None
    message = clip(text.strip(), 500) if isinstance(text, str) and text.strip() else None
    code = word or f"http_{http}"
    message = message or word or f"HTTP {http}"
    raw = cap_raw(body)
    if http in (401, 403):
        raise CredentialError(message, code=code, raw=raw)
    if http == 429:
        # too_many_concurrent_requests (over the plan's concurrency) or system_busy.
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise RateLimited(message, retry_after_s=retry_after, code=code, raw=raw)
    if http == 404 and word == NOT_FOUND:
        raise TaskError(message, code=code, raw=raw)
    if http == 422 and isinstance(detail, list):
        # The GET's one documented error: the path parameter failed validation, which
        # no retry of the same id changes.
        raise TaskError("the dubbing_id was refused as invalid", code="http_422", raw=raw)
    # 408 and 5xx; a 404 without dubbing_not_found (a wrong base URL, a proxy); anything
    # else undocumented: transient, so a misconfiguration does not fail every task at once.
    raise TransientError(message, code=code, raw=raw)


def _base_url(response: httpx.Response, path: str) -> str:
    """The instance's base URL: the query's URL without the path pollhook appended."""
    url = str(response.request.url)
    if not url.endswith(path):
        # HttpUpstream refuses to send any other path; this is only reached if that changes.
        raise malformed(f"the query went to {clip(url)}, not to {clip(path)}", {})
    return url[: -len(path)]


def _result(body: dict[str, Any], base_url: str, context: PollContext) -> ElevenLabsDubbingResult:
    """What a dubbed project produced. Without target languages there is nothing to fetch:
    retried as not ready, and the task fails with incomplete_result after
    RESULT_NOT_READY_POLLS polls."""
    languages = body.get("target_languages")
    if not isinstance(languages, list) or not all(_is_language(lang) for lang in languages):
        raise malformed("target_languages is not a list of language codes", body)
    if not languages:
        raise result_not_ready(
            context,
            "dubbed without target_languages",
            final_code="incomplete_result",
            raw=cap_raw(body),
        )
    dub = base_url + QUERY_PATH + quote(body["dubbing_id"], safe="")
    media = body.get("media_metadata")
    media = media if isinstance(media, dict) else {}
    duration = media.get("duration")
    return ElevenLabsDubbingResult(
        kind="elevenlabs_dubbing",
        dubbing_id=body["dubbing_id"],
        name=_text(body.get("name")),
        source_language=_text(body.get("source_language")),
        media_content_type=_text(media.get("content_type")),
        media_duration_s=finite_number(duration),
        languages=[
            ElevenLabsDubbedLanguage(
                language=lang,
                audio_url=f"{dub}/audio/{quote(lang, safe='')}",
                transcript_url=f"{dub}/transcript/{quote(lang, safe='')}?format_type=srt",
            )
            for lang in languages
        ],
    )


def _is_language(value: Any) -> bool:
    """A language code that stays one path segment of the file URLs."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LANGUAGE_CHARS
        and path_segment_problem(value) is None
    )


def _text(value: Any) -> str | None:
    """Optional descriptive text: kept when it is a non-empty string, else None (a bad one
    must not hold back the dub, which is usable without it)."""
    return clip(value.strip(), 500) if isinstance(value, str) and value.strip() else None


def _message(body: dict[str, Any]) -> str:
    return _text(body.get("error")) or _FAILED_DEFAULT
