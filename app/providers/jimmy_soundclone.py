"""Jimmy AI SoundClone: one GET per poll; answers come in a `{code, msg, data}` envelope.

The facts relied on here, with their sources, are in docs/providers.md ("Jimmy AI
SoundClone"). `code` is 20000 on the SoundClone pages but "20000" on other Jimmy
endpoints, so it is compared as text. The error codes come from vendor-written summaries,
not an official table, hence the bias towards transient for anything unclear.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from app.core.config import ProviderKind
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CallbackSigning,
    CredentialError,
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
from app.providers.external_ids import opaque_id
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_unless_success,
    url_expires_at,
)

QUERY_PATH = "/api/open-api/v1/audios/"
SUCCESS_CODE = "20000"
CREDENTIAL_CODE = "20001"
BAD_REQUEST_CODE = "20002"
MAX_MODEL_ID_CHARS = 256
# Jimmy states no lifetime for audioUrl or subtitleFile; its other media URLs last 3 days
# (docs/providers.md), so the archive copies within that unless the URL says less.
MEDIA_URL_LIFETIME = timedelta(days=3)
# `model` of a preview (clone) task, which produces a modelId and a preview audioUrl, and
# of a production audio task, which produces an audioUrl (and subtitleFile if asked).
CLONE_MODEL = "soundCloningClone"
AUDIO_MODEL = "soundCloningAudio"

# The SoundClone page lists queued/processing/completed/failed; other Jimmy endpoints and the
# FAQ add pending/submitted/success, and public clients treat canceled/cancelled as final.
_STATUSES = {
    "queued": TaskStatus.QUEUED,
    "pending": TaskStatus.QUEUED,
    "submitted": TaskStatus.QUEUED,
    "processing": TaskStatus.PROCESSING,
    "completed": TaskStatus.SUCCEEDED,
    "success": TaskStatus.SUCCEEDED,
}
_CANCELLED = frozenset({"canceled", "cancelled"})
# The query page names `error`; the video query uses `error_message`, the FAQ `error_msg`/`reason`.
_MESSAGE_FIELDS = ("error", "error_message", "error_msg", "reason")
# What an envelope's `msg` says on every accepted answer: no explanation of a failure.
_GENERIC_MSGS = frozenset({"ok", "success"})

logger = get_logger(__name__)


class JimmySoundCloneResult(ProviderResult):
    """A finished Jimmy AI SoundClone task (preview or production audio)."""

    kind: Literal["jimmy_soundclone"] = Field(description="The provider kind.")
    audio_url: str = Field(
        description="`audioUrl`: the preview audio of a clone task (model "
        "soundCloningClone) or the generated audio (soundCloningAudio). Jimmy states no "
        "lifetime for it; its other media URLs last 3 days, so copy it promptly."
    )
    model_id: str | None = Field(
        None,
        description="`modelId`: the cloned voice a clone preview produces, to pass to "
        "Jimmy's audio-create. Valid for 3 days unless used, then permanent. Null for "
        "production audio tasks.",
    )
    subtitle_url: str | None = Field(
        None,
        description="`subtitleFile`: the subtitles of an audio task created with "
        "subtitleEnable. Null when there are none.",
    )


class JimmySoundCloneAdapter:
    kind: ProviderKind = ProviderKind.JIMMY_SOUNDCLONE
    requests_per_success: int = 0

    def normalize_id(self, raw: object) -> str:
        # Jimmy's ids (`audio_<uuid>` as seen) are opaque; the query takes one as a path
        # segment.
        return opaque_id(raw)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # Jimmy documents no completion callback.
    callbacks: CallbackSigning = CallbackSigning.NONE

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        assert isinstance(result, JimmySoundCloneResult)
        urls = [("audio", result.audio_url), ("subtitle", result.subtitle_url)]
        return [
            ResultFile(kind, url, url_expires_at(url, received_at, MEDIA_URL_LIFETIME))
            for kind, url in urls
            if url is not None
        ]

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        external_id = context.external_id
        require_canonical(self.normalize_id, external_id)
        response = await upstream.get(QUERY_PATH + quote(external_id, safe=""))
        body = _checked(response)
        data = body.get("data")
        if not isinstance(data, dict):
            raise malformed("data is missing or not an object", body)
        status = data.get("status")
        if not isinstance(status, str):
            raise malformed("data.status is missing or not a string", body)
        task_id = data.get("id")
        if not isinstance(task_id, str) or task_id != external_id:
            # An answer about something else (another task, or none named) must not end
            # this one.
            raise malformed(f"the answer is for id {clip(repr(task_id))}", body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "failed":
            message = _message(data, body, "the provider reported a failure")
            return PollOutcome(
                TaskStatus.FAILED, shown, error={"code": "failed", "message": message}, raw=raw
            )
        if normalized in _CANCELLED:
            message = _message(data, body, "the provider cancelled the task")
            error = {"code": "cancelled_upstream", "message": message}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        mapped = _STATUSES.get(normalized)
        if mapped is TaskStatus.SUCCEEDED:
            return PollOutcome(mapped, shown, result=_result(data, body, context), raw=raw)
        # Still running: a completed answer that lacked its result earlier was not the end.
        context.checkpoint = None
        if mapped is None:
            logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(mapped, shown, raw=raw)


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The body of a successful envelope; raises the matching ProviderError otherwise.

    The envelope's specific codes (20001 auth, 20002 bad request) beat the HTTP status. For the
    generic ones (-1, unknown) the HTTP status says more: a 429 must slow the instance down.
    """
    try:
        body = json_object(response)
    except TransientError:
        raise_unless_success(response)
        raise
    if body.get("code") is None:
        raise_unless_success(response)
        raise malformed("no code in the envelope", body)
    code = clip(str(body["code"]), 50)
    msg = body.get("msg")
    message = clip(msg.strip(), 500) if isinstance(msg, str) and msg.strip() else f"code {code}"
    if code == CREDENTIAL_CODE:
        raise CredentialError(message, code=code, raw=cap_raw(body))
    if code == BAD_REQUEST_CODE:
        raise TaskError(message, code=code, raw=cap_raw(body))
    raise_unless_success(response)
    if code != SUCCESS_CODE:
        # -1 is the documented "server error, retry later"; unknown codes are treated alike.
        raise TransientError(message, code=code, raw=cap_raw(body))
    return body


def _result(
    data: dict[str, Any], body: dict[str, Any], context: PollContext
) -> JimmySoundCloneResult:
    """What a completed task produced, as its `model` says it must: a clone preview a
    modelId and an audioUrl, an audio task (or one whose model is missing or unknown) an
    audioUrl. A completed answer without them is not success: it is retried as not ready,
    and fails the task with incomplete_result after RESULT_NOT_READY_POLLS polls."""
    model = data.get("model")
    audio_url = _present(data, "audioUrl")
    if audio_url is not None and (not isinstance(audio_url, str) or not is_http_url(audio_url)):
        raise malformed("audioUrl is not an http(s) URL", body)
    model_id = _present(data, "modelId")
    if model_id is not None and (
        not isinstance(model_id, str) or len(model_id) > MAX_MODEL_ID_CHARS
    ):
        raise malformed("modelId is not a short string", body)
    missing = ["audioUrl"] if audio_url is None else []
    if model == CLONE_MODEL and model_id is None:
        missing.append("modelId")
    if missing:
        produced_by = clip(model) if isinstance(model, str) else "a task without a model"
        raise result_not_ready(
            context,
            f"completed without {' and '.join(missing)}, which {produced_by} produces",
            final_code="incomplete_result",
            raw=cap_raw(body),
        )
    return JimmySoundCloneResult(
        kind="jimmy_soundclone",
        audio_url=audio_url,
        model_id=model_id,
        subtitle_url=_subtitle(data),
    )


def _present(data: dict[str, Any], name: str) -> Any:
    """The field's value; None when it is absent, null or empty."""
    value = data.get(name)
    return None if value in (None, "") else value


def _subtitle(data: dict[str, Any]) -> str | None:
    subtitle = _present(data, "subtitleFile")
    if subtitle is None:
        return None
    if isinstance(subtitle, str) and is_http_url(subtitle):
        return subtitle
    # Optional extra: a bad one must not hold back the audio, which is usable without it.
    logger.warning("provider.bad_subtitle_file", subtitle_file=clip(str(subtitle)))
    return None


def _message(data: dict[str, Any], body: dict[str, Any], default: str) -> str:
    """The failure's explanation: data's own message fields, else the envelope's `msg`
    when it says more than the generic "ok", else `default`."""
    for name in _MESSAGE_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return clip(value.strip(), 500)
    msg = body.get("msg")
    if isinstance(msg, str) and msg.strip() and msg.strip().lower() not in _GENERIC_MSGS:
        return clip(msg.strip(), 500)
    return default
