"""Jimmy AI SoundClone: one GET per poll; answers come in a `{code, msg, data}` envelope.

See docs/upstreams.md §1.2 and §1.5. `code` is 20000 on the SoundClone pages but "20000" on
other Jimmy endpoints, so it is compared as text. The error codes come from vendor-written
summaries, not an official table, hence the bias towards transient for anything unclear.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from app.core.config import ProviderKind
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CredentialError,
    PollOutcome,
    TaskError,
    TransientError,
    Upstream,
    cap_raw,
)
from app.providers.external_ids import InvalidExternalId, normalize_external_id
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    unexpected_status,
)

QUERY_PATH = "/api/open-api/v1/audios/"
SUCCESS_CODE = "20000"
CREDENTIAL_CODE = "20001"
BAD_REQUEST_CODE = "20002"
MAX_MODEL_ID_CHARS = 256

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

logger = get_logger(__name__)


class JimmySoundCloneAdapter:
    kind: ProviderKind = ProviderKind.JIMMY_SOUNDCLONE
    requests_per_success: int = 0

    async def poll(self, upstream: Upstream, external_id: str) -> PollOutcome:
        try:
            # Registration refuses such ids; one stored before it did must not be sent.
            normalize_external_id(self.kind, external_id)
        except InvalidExternalId as exc:
            raise TaskError(f"external_id {exc}", code="invalid_external_id") from None
        response = await upstream.get(QUERY_PATH + quote(external_id, safe=""))
        body = _checked(response)
        data = body.get("data")
        if not isinstance(data, dict):
            raise malformed("data is missing or not an object", body)
        status = data.get("status")
        if not isinstance(status, str):
            raise malformed("data.status is missing or not a string", body)
        task_id = data.get("id")
        if isinstance(task_id, str) and task_id != external_id:
            raise malformed(f"the answer is for id {clip(task_id)}", body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "failed":
            error = {"code": "failed", "message": _message(data, "the provider reported a failure")}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized in _CANCELLED:
            message = _message(data, "the provider cancelled the task")
            error = {"code": "cancelled_upstream", "message": message}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        mapped = _STATUSES.get(normalized)
        if mapped is TaskStatus.SUCCEEDED:
            return PollOutcome(mapped, shown, result=_result(data, body), raw=raw)
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
        _raise_for_status(response)
        raise
    if body.get("code") is None:
        _raise_for_status(response)
        raise malformed("no code in the envelope", body)
    code = clip(str(body["code"]), 50)
    msg = body.get("msg")
    message = clip(msg.strip(), 500) if isinstance(msg, str) and msg.strip() else f"code {code}"
    if code == CREDENTIAL_CODE:
        raise CredentialError(message, code=code, raw=cap_raw(body))
    if code == BAD_REQUEST_CODE:
        raise TaskError(message, code=code, raw=cap_raw(body))
    _raise_for_status(response)
    if code != SUCCESS_CODE:
        # -1 is the documented "server error, retry later"; unknown codes are treated alike.
        raise TransientError(message, code=code, raw=cap_raw(body))
    return body


def _raise_for_status(response: httpx.Response) -> None:
    raise_for_http_status(response)
    if not response.is_success:
        raise unexpected_status(response)


def _result(data: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    audio_url = data.get("audioUrl")
    model_id = data.get("modelId")
    if audio_url in (None, "") and model_id in (None, ""):
        # A finished clone preview is usable through modelId alone; with neither, nothing is.
        raise TransientError(
            "completed without audioUrl or modelId", code="missing_audio_url", raw=cap_raw(body)
        )
    result: dict[str, Any] = {}
    if audio_url not in (None, ""):
        if not isinstance(audio_url, str) or not is_http_url(audio_url):
            raise malformed("audioUrl is not an http(s) URL", body)
        result["audio_url"] = audio_url
    if model_id not in (None, ""):
        if not isinstance(model_id, str) or len(model_id) > MAX_MODEL_ID_CHARS:
            raise malformed("modelId is not a short string", body)
        result["model_id"] = model_id
    subtitle = data.get("subtitleFile")
    if isinstance(subtitle, str) and is_http_url(subtitle):
        result["subtitle_url"] = subtitle
    elif subtitle not in (None, ""):
        # Optional extra: a bad one must not hold back the audio, which is usable without it.
        logger.warning("provider.bad_subtitle_file", subtitle_file=clip(str(subtitle)))
    return result


def _message(data: dict[str, Any], default: str) -> str:
    for name in _MESSAGE_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return clip(value.strip(), 500)
    return default
