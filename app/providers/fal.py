"""fal queue: the request's status, then, once COMPLETED, its result (the model's output).

The facts relied on here, with their sources, are in docs/providers.md ("fal queue"). fal
routes a queue request by its model: the status and result URLs are
`/{owner}/{app}/requests/{request_id}[/status]` (never the endpoint's sub-path), so the
external id pollhook tracks carries the model: `<owner>/<app>/<request_id>`
(`normalize_id`).

A poll that finds the request COMPLETED without an error takes two requests, the status
and the result. COMPLETED goes into the checkpoint before the result is asked for, so a
result GET that fails, times out or misses its budget slot is retried on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

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
    TransientError,
    Upstream,
    cap_raw,
    require_canonical,
    result_not_ready,
)
from app.providers.external_ids import (
    InvalidExternalId,
    id_text,
    path_segment_problem,
)
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    unexpected_status,
    url_expires_at,
)

# fal_client's app namespaces: `workflows/<owner>/<app>` is one model, not owner/app/path.
NAMESPACES = frozenset({"workflows", "comfy"})
# fal states no lifetime for its CDN files: they live as the account's storage settings
# (or the request's X-Fal-Object-Lifecycle-Preference) say, and do not expire by default.
# The archive copies within a day unless the URL says less.
MEDIA_URL_LIFETIME = timedelta(days=1)
# fal reports how many requests are ahead, not how fast they go; an audio request takes
# seconds, so each position ahead (and the request itself) counts this much.
QUEUE_PACE = timedelta(seconds=10)
# A model's output is walked this deep, and at most this many files are listed.
MAX_OUTPUT_DEPTH = 8
MAX_FILES = 100

# A path segment of a model id: fal's owners and apps are like `fal-ai`, `110602490`,
# `stable-audio`, `v1.1`; a letter or digit first, so never a dot segment.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REQUEST_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_QUEUED = frozenset({"IN_QUEUE"})
_RUNNING = frozenset({"IN_PROGRESS"})
# Not in fal's docs or SDKs (COMPLETED with `error` is how a failure reads), but written
# by third-party schemas of the status answer: understood, in case it ever answers them.
_FAILED = frozenset({"FAILED"})
_CANCELLED = frozenset({"CANCELED", "CANCELLED"})
_SUBTITLE_TYPES = frozenset({"application/x-subrip", "text/vtt"})
_SUBTITLE_EXTENSIONS = (".srt", ".vtt")

logger = get_logger(__name__)


class FalFile(BaseModel):
    """One fal File object found in the model's output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(
        description="Where the file is in `output`, as a JSON path (`audio`, `audios[1]`, "
        "`result.audio_file`).",
        examples=["audio"],
    )
    url: str = Field(
        description="The file on fal's CDN. It lives as the account's storage settings say "
        "(no expiry unless one is set): copy it if it must outlive them."
    )
    content_type: str | None = Field(None, description="`content_type` as fal gives it.")
    file_name: str | None = Field(None, description="`file_name` as fal gives it.")
    file_size: int | None = Field(None, description="`file_size` in bytes, as fal gives it.")


class FalResult(ProviderResult):
    """A completed fal queue request: the model's output, and every file it links to."""

    kind: Literal["fal"] = Field(description="The provider kind.")
    model: str = Field(
        description="The model's `owner/app` the request ran on (from the external id).",
        examples=["fal-ai/minimax-music"],
    )
    request_id: str = Field(description="fal's request_id.")
    files: list[FalFile] = Field(
        description="Every fal File object (an object with an http(s) `url`) in `output`, "
        "in document order: an audio model's `audio`, `audio_file` or lists of them. "
        "Empty when the model returns no file (a transcript, or `data:` URIs inline)."
    )
    output: dict[str, Any] = Field(
        description="The model's output exactly as fal's result endpoint returned it; each "
        "model has its own schema (see the model's page on fal.ai)."
    )


class FalAdapter:
    kind: ProviderKind = ProviderKind.FAL
    requests_per_success: int = 1  # the result GET

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    def normalize_id(self, raw: object) -> str:
        return _Request.parse(raw).external_id

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Key {key}"}

    # fal signs its webhooks with ED25519 keys fetched from its JWKS URL, which pollhook
    # does not reach out for: the instance's token in the URL stands in.
    callbacks: CallbackSigning = CallbackSigning.TOKEN

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        # fal's webhook body names the request_id but not the model, and the canonical id
        # needs both: the URL handed to fal carries the model (`&model=<owner>/<app>`,
        # docs/providers.md, "Callbacks").
        request_id, model = body.get("request_id"), query.get("model")
        if not isinstance(request_id, str) or model is None:
            return None
        try:
            return self.normalize_id(f"{model}/{request_id}")
        except InvalidExternalId:
            return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        assert isinstance(result, FalResult)
        return [
            ResultFile(_file_kind(f), f.url, url_expires_at(f.url, received_at, MEDIA_URL_LIFETIME))
            for f in result.files
        ]

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        require_canonical(self.normalize_id, context.external_id)
        request = _Request.parse(context.external_id)
        resumed = _completed_status(context.checkpoint)
        if resumed is not None:
            # fal said COMPLETED on an earlier poll: only the result is still to be had.
            return await self._result(upstream, context, request, resumed, status=None)
        body = _checked(await upstream.get(request.path + "/status"))
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", body)
        _check_names(request, body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().upper()
        if normalized == "COMPLETED":
            error = _status_error(body)
            if error is not None:
                context.checkpoint = None
                return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
            # Recorded before the result GET: whatever becomes of it, the next poll resumes
            # there instead of asking for a status that cannot change any more.
            context.checkpoint = {"completed": shown}
            return await self._result(upstream, context, request, shown, status=raw)
        context.checkpoint = None
        if normalized in _QUEUED:
            return PollOutcome(TaskStatus.QUEUED, shown, raw=raw, ready_at=self._ready_at(body))
        if normalized in _RUNNING:
            return PollOutcome(TaskStatus.PROCESSING, shown, raw=raw)
        if normalized in _FAILED | _CANCELLED:
            code = "cancelled_upstream" if normalized in _CANCELLED else "failed"
            error = _status_error(body) or {"code": code, "message": f"fal reported {shown}"}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(None, shown, raw=raw)

    def _ready_at(self, body: dict[str, Any]) -> datetime | None:
        position = body.get("queue_position")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            return None
        # Bounded so a wild position cannot overflow a datetime.
        return self._clock() + QUEUE_PACE * (min(position, 100_000) + 1)

    async def _result(
        self,
        upstream: Upstream,
        context: PollContext,
        request: _Request,
        shown: str,
        status: dict[str, Any] | None,
    ) -> PollOutcome:
        response = await upstream.get(request.path)
        if response.status_code == 200:
            output = json_object(response)
            result = FalResult(
                kind="fal",
                model=request.model,
                request_id=request.request_id,
                files=_files(output),
                output=output,
            )
            raw = {"result": cap_raw(output)}
            if status is not None:
                raw = {"status": status, **raw}
            return PollOutcome(TaskStatus.SUCCEEDED, shown, result=result, raw=raw)
        raise_for_http_status(response)
        if response.status_code in (202, 404):
            # 202: not handed over yet; 404: none (yet, or no more: fal keeps a result 1 h,
            # 6 min from 10 KB). Retried a bounded number of polls either way.
            raise result_not_ready(
                context,
                f"the result answered HTTP {response.status_code} after COMPLETED",
                final_code="result_unavailable",
                raw=_error_raw(response),
            )
        if 400 <= response.status_code < 500:
            # The result endpoint answers the model's own error as the model gave it.
            error = _response_error(response)
            raw = {"result": _error_raw(response)}
            if status is not None:
                raw = {"status": status, **raw}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        raise unexpected_status(response)


@dataclass(frozen=True)
class _Request:
    """An external id taken apart: the model path fal routes by, and the request_id."""

    model: str
    request_id: str

    @property
    def external_id(self) -> str:
        return f"{self.model}/{self.request_id}"

    @property
    def path(self) -> str:
        return f"/{self.model}/requests/{self.request_id}"

    @classmethod
    def parse(cls, raw: object) -> _Request:
        """`<owner>/<app>/<request_id>`; `workflows/` or `comfy/` before the owner, and
        an endpoint sub-path after the app (`fal-ai/flux/dev/<id>`), are accepted too,
        the sub-path dropped: fal's status and result routes take the owner and app only.
        The request_id is a UUID, written in lowercase."""
        *model, request_id = id_text(raw).split("/")
        for segment in model:
            # Dot segments, separators and invisible characters first, with their reason.
            problem = path_segment_problem(segment) if segment else "must not be empty"
            if problem is not None:
                raise InvalidExternalId(f"model segment {clip(repr(segment), 60)} {problem}")
            if not _SEGMENT.fullmatch(segment):
                raise InvalidExternalId(
                    f"model segment {clip(repr(segment), 60)} must be 1-100 characters of "
                    "A-Z a-z 0-9 . _ - starting with a letter or digit"
                )
        keep = 3 if model and model[0] in NAMESPACES else 2
        if len(model) < keep:
            raise InvalidExternalId(
                "must be <owner>/<app>/<request_id> (fal's model id, then the request_id)"
            )
        if not _REQUEST_ID.fullmatch(request_id.lower()):
            raise InvalidExternalId(
                f"request_id {clip(repr(request_id), 60)} must be a UUID "
                "(8-4-4-4-12 hexadecimal digits)"
            )
        return cls("/".join(model[:keep]), request_id.lower())


def _completed_status(checkpoint: dict[str, Any] | None) -> str | None:
    """The status word a checkpoint records fal's COMPLETED under; None when it records
    none (or not in a shape this version wrote: then the status is asked for again)."""
    if not isinstance(checkpoint, dict):
        return None
    completed = checkpoint.get("completed")
    return completed if isinstance(completed, str) and completed else None


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The status answer's body (HTTP 202 while queued or running, 200 once complete);
    raises the matching ProviderError otherwise."""
    raise_for_http_status(response)
    if response.status_code not in (200, 202):
        raise unexpected_status(response)
    return json_object(response)


def _check_names(request: _Request, body: dict[str, Any]) -> None:
    """An answer that names another request must not end this one. fal's status answer
    carries `response_url` (and some carry `request_id`); an answer naming none passes."""
    named = body.get("request_id")
    if named is not None and (not isinstance(named, str) or named.lower() != request.request_id):
        raise malformed(f"the answer is for request_id {clip(repr(named))}", body)
    for name in ("response_url", "status_url"):
        url = body.get(name)
        if url is None:
            continue
        if not isinstance(url, str):
            raise malformed(f"{name} is not a string", body)
        try:
            segments = urlsplit(url).path.lower().split("/")
        except ValueError:
            raise malformed(f"{name} is not a URL", body) from None
        if request.request_id not in segments:
            raise malformed(f"{name} {clip(url)} is for another request", body)


def _status_error(body: dict[str, Any]) -> dict[str, Any] | None:
    """A COMPLETED answer's failure: `error` (a message) and `error_type` (fal's category,
    the task's error code); None when it carries neither."""
    message, error_type = body.get("error"), body.get("error_type")
    message = clip(message.strip(), 500) if isinstance(message, str) and message.strip() else None
    code = (
        clip(error_type.strip(), 100)
        if isinstance(error_type, str) and error_type.strip()
        else None
    )
    if message is None and code is None:
        return None
    return {"code": code or "failed", "message": message or f"fal reported {code}"}


def _response_error(response: httpx.Response) -> dict[str, Any]:
    """The model's error as the result endpoint answers it: a request error
    `{detail: "...", error_type}` (also in `X-Fal-Error-Type`), or a validation error
    `{detail: [{loc, msg, type}, ...]}`; code `http_<status>` when neither names one."""
    code = f"http_{response.status_code}"
    message = f"the result answered HTTP {response.status_code}"
    header = response.headers.get("x-fal-error-type", "").strip()
    try:
        body = json_object(response)
    except TransientError:
        body = {}
    detail = body.get("detail")
    error_type = body.get("error_type")
    if isinstance(detail, str) and detail.strip():
        message = clip(detail.strip(), 500)
    elif isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        msg, kind, loc = first.get("msg"), first.get("type"), first.get("loc")
        if isinstance(msg, str) and msg.strip():
            where = ".".join(str(p) for p in loc) if isinstance(loc, list) and loc else None
            message = clip(f"{where}: {msg.strip()}" if where else msg.strip(), 500)
        if isinstance(kind, str) and kind.strip():
            code = clip(kind.strip(), 100)
    if isinstance(error_type, str) and error_type.strip():
        code = clip(error_type.strip(), 100)
    elif header:
        code = clip(header, 100)
    return {"code": code, "message": message}


def _error_raw(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json_object(response)
    except TransientError as exc:
        return exc.raw or {"http_status": response.status_code}
    return cap_raw({"http_status": response.status_code, "body": body})


def _files(output: dict[str, Any]) -> list[FalFile]:
    """Every fal File object in the output, in document order, with its JSON path."""
    found: list[FalFile] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if len(found) >= MAX_FILES or depth > MAX_OUTPUT_DEPTH:
            return
        if isinstance(value, dict):
            url = value.get("url")
            if isinstance(url, str) and is_http_url(url):
                found.append(_file(value, path or "$", url))
                return
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key), depth + 1)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]", depth + 1)

    walk(output, "", 0)
    return found


def _file(value: dict[str, Any], path: str, url: str) -> FalFile:
    content_type, file_name, size = (
        value.get("content_type"),
        value.get("file_name"),
        value.get("file_size"),
    )
    return FalFile(
        field=clip(path, 500),
        url=url,
        content_type=clip(content_type, 200) if isinstance(content_type, str) else None,
        file_name=clip(file_name, 255) if isinstance(file_name, str) else None,
        file_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def _file_kind(file: FalFile) -> str:
    """What the archive files it as: `audio`, `subtitle`, or `extra` for anything else a
    model returns (an image, a video, a JSON)."""
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    name = (file.file_name or urlsplit(file.url).path).lower()
    if content_type.startswith("audio/"):
        return "audio"
    if content_type in _SUBTITLE_TYPES or name.endswith(_SUBTITLE_EXTENSIONS):
        return "subtitle"
    return "extra"
