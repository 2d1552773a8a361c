"""Alibaba DashScope (Model Studio) async tasks: one GET per poll on the generic task route.

The facts relied on here, with their sources, are in docs/providers.md ("Alibaba DashScope
async tasks"). An answer is `{request_id, output: {task_id, task_status, ...}, usage}`; a
refused request is an HTTP error status with `{request_id, code, message}`.

A file transcription (Paraformer, Fun-ASR, SenseVoice) runs one subtask per input file, and
DashScope says SUCCEEDED once any subtask succeeded, sometimes even when its only one
failed: the subtasks decide. Every subtask failed is a failed task with the first one's
code; some failed is a success whose result keeps each file's own status.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
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
    ProviderError,
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
from app.providers.external_ids import InvalidExternalId
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    raise_unless_success,
    unexpected_status,
    url_expires_at,
)

QUERY_PATH = "/api/v1/tasks/"
# Task data and the result URLs DashScope hands out live 24 hours.
RESULT_URL_LIFETIME = timedelta(hours=24)
# Every task id DashScope documents or returns is a UUID.
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_CODE_CHARS = 100
MAX_MESSAGE_CHARS = 500

_RUNNING = {
    "PENDING": TaskStatus.QUEUED,
    # The SDK's own word for a task held back; it is not over, so it waits like a queued one.
    "SUSPENDED": TaskStatus.QUEUED,
    "RUNNING": TaskStatus.PROCESSING,
}
# Whatever these say, the key or the account is the problem, not the task: every query of
# the instance would answer alike, so the instance pauses instead of failing its tasks.
CREDENTIAL_CODES = frozenset({"InvalidApiKey", "Arrearage", "AccessDenied"})
# The query has one parameter, the task id: an invalid one is the task's problem.
TASK_CODES = frozenset({"InvalidParameter"})
# The EventBridge event DashScope sends when an async task ends (docs/providers.md, Callbacks).
CALLBACK_SOURCE = "acs.dashscope"
CALLBACK_TYPE = "dashscope:System:AsyncTaskFinish"

logger = get_logger(__name__)


class DashscopeFile(BaseModel):
    """One input file of a task and what became of it (a file transcription's subtask)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["succeeded", "failed"] = Field(
        description="The subtask's `subtask_status`: succeeded, or failed with `code`."
    )
    file_url: str | None = Field(
        None, description="`file_url`: the input file, as the task was given it."
    )
    transcription_url: str | None = Field(
        None,
        description="`transcription_url`: the JSON transcript of a succeeded file; null "
        "for a failed one.",
    )
    transcription_url_expires_at: datetime | None = Field(
        None,
        description="When transcription_url stops working: 24 hours after pollhook got it "
        "(DashScope's documented lifetime), or earlier if the URL's own `Expires=` says so.",
    )
    code: str | None = Field(
        None,
        description="A failed file's error code, e.g. `InvalidFile.DownloadFailed`.",
        examples=["InvalidFile.DownloadFailed"],
    )
    message: str | None = Field(None, description="A failed file's error message.")


class DashscopeResult(ProviderResult):
    """A DashScope async task that succeeded: the transcript of each of its files."""

    kind: Literal["dashscope"] = Field(description="The provider kind.")
    files: list[DashscopeFile] = Field(
        description="One entry per input file, in DashScope's order: `output.results` of a "
        "Paraformer / Fun-ASR / SenseVoice file transcription, or the one `output.result` "
        "of a Qwen-ASR one. At least one succeeded."
    )
    partial: bool = Field(
        description="True when some files failed: DashScope reports the task SUCCEEDED "
        "once any file succeeded, so check each file's `status`."
    )


class DashscopeAdapter:
    kind: ProviderKind = ProviderKind.DASHSCOPE
    requests_per_success: int = 0

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    def normalize_id(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise InvalidExternalId("must be a string (a DashScope task_id is a UUID)")
        # DashScope writes its ids in lowercase; the canonical form keeps one task one row.
        text = raw.lower()
        if not _TASK_ID.fullmatch(text):
            raise InvalidExternalId(
                "must be a DashScope task_id: a UUID such as a8532587-0c46-4b17-950d-1c46b17950d1"
            )
        return text

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # EventBridge posts the task-finish event unsigned; the URL's token is the proof.
    callbacks: CallbackSigning = CallbackSigning.TOKEN

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        if body.get("source") != CALLBACK_SOURCE or body.get("type") != CALLBACK_TYPE:
            return None
        data = body.get("data")
        task_id = data.get("task_id") if isinstance(data, dict) else None
        try:
            return self.normalize_id(task_id)
        except InvalidExternalId:
            return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        assert isinstance(result, DashscopeResult)
        # A transcript is sentences with their timings: the archive's `subtitle`.
        return [
            ResultFile("subtitle", file.transcription_url, file.transcription_url_expires_at)
            for file in result.files
            if file.transcription_url is not None and file.transcription_url_expires_at
        ]

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        external_id = context.external_id
        require_canonical(self.normalize_id, external_id)
        # Taken before the request: the answer's URLs are signed during it, so the lifetime
        # counted from here errs early.
        received_at = self._clock()
        response = await upstream.get(QUERY_PATH + quote(external_id, safe=""))
        body = _checked(response)
        output = body.get("output")
        if not isinstance(output, dict):
            raise malformed("output is missing or not an object", body)
        status = output.get("task_status")
        if not isinstance(status, str):
            raise malformed("output.task_status is missing or not a string", body)
        task_id = output.get("task_id")
        # An answer about another task must not end this one. One naming none (its answer
        # for a task it does not have may not) is taken as this task's: it was asked for it.
        if task_id is not None and (not isinstance(task_id, str) or task_id.lower() != external_id):
            raise malformed(f"the answer is for task_id {clip(repr(task_id))}", body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().upper()
        if normalized == "SUCCEEDED":
            return _succeeded(output, body, context, shown, raw, received_at=received_at)
        # Not (or no longer) done: a SUCCEEDED without its result earlier was not the end.
        context.checkpoint = None
        if normalized == "FAILED":
            error = _error(output, "failed", "DashScope reported the task failed")
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized in ("CANCELED", "CANCELLED"):
            reason = _text(output.get("message"), MAX_MESSAGE_CHARS)
            error = {
                "code": "cancelled_upstream",
                "message": reason or "the task was canceled at DashScope",
            }
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized == "UNKNOWN":
            # DashScope's word for a task it does not have: never created under this
            # account, or deleted 24 hours after it ended. No later poll can find it.
            error = {
                "code": "unknown_task",
                "message": "DashScope has no such task: its data is deleted 24 hours after it "
                "ends, and tasks of other accounts or regions are not visible",
            }
            return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
        mapped = _RUNNING.get(normalized)
        if mapped is None:
            logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(mapped, shown, raw=raw)


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The body of an accepted answer; raises the matching ProviderError otherwise.

    A refusal's `code` says more than its HTTP status (an overdue account is a 400), so it
    is read first; without one the HTTP status decides."""
    try:
        body = json_object(response)
    except TransientError:
        raise_unless_success(response)
        raise
    if response.is_success:
        return body
    code = body.get("code")
    if isinstance(code, str) and code.strip():
        raise _classify(clip(code.strip(), MAX_CODE_CHARS), response, body)
    raise_for_http_status(response)
    raise unexpected_status(response)


def _classify(code: str, response: httpx.Response, body: dict[str, Any]) -> ProviderError:
    message = _text(body.get("message"), MAX_MESSAGE_CHARS) or f"DashScope {code}"
    raw = cap_raw(body)
    family = code.split(".", 1)[0]
    if family == "Throttling" or response.status_code == 429:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return RateLimited(message, retry_after_s=retry_after, code=code, raw=raw)
    if family in CREDENTIAL_CODES or response.status_code in (401, 403):
        return CredentialError(message, code=code, raw=raw)
    if code in TASK_CODES:
        return TaskError(message, code=code, raw=raw)
    # InternalError, ServiceUnavailable and any code not known yet: an unknown code must
    # never fail a task, the deadline bounds the retries.
    return TransientError(message, code=code, raw=raw)


def _succeeded(
    output: dict[str, Any],
    body: dict[str, Any],
    context: PollContext,
    shown: str,
    raw: dict[str, Any],
    *,
    received_at: datetime,
) -> PollOutcome:
    """What a SUCCEEDED task produced, as its subtasks say: every file failed is a failed
    task; none finished (or no result at all) is not ready yet."""
    files = _files(output, body, received_at)
    if files is None:
        raise result_not_ready(
            context,
            "SUCCEEDED without results or result.transcription_url",
            final_code="incomplete_result",
            raw=raw,
        )
    succeeded = [f for f in files if f.status == "succeeded"]
    if not succeeded:
        first = files[0]
        error = {
            "code": first.code or "failed",
            "message": first.message or "every file of the task failed",
        }
        return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
    result = DashscopeResult(kind="dashscope", files=files, partial=len(succeeded) < len(files))
    return PollOutcome(TaskStatus.SUCCEEDED, shown, result=result, raw=raw)


def _files(
    output: dict[str, Any], body: dict[str, Any], received_at: datetime
) -> list[DashscopeFile] | None:
    """Each file's outcome; None when the answer holds none, or a subtask still runs."""
    results = output.get("results")
    single = output.get("result")
    if results is None and single is None:
        return None
    if results is not None:
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise malformed("output.results is not a list of objects", body)
        if not results:
            return None
        files = [_file(item, body, received_at) for item in results]
    else:
        if not isinstance(single, dict):
            raise malformed("output.result is not an object", body)
        # Qwen-ASR gives one result with no subtask status: its URL is its success.
        files = [_file({"subtask_status": "SUCCEEDED", **single}, body, received_at)]
    if any(f is None for f in files):
        return None
    return [f for f in files if f is not None]


def _file(
    item: dict[str, Any], body: dict[str, Any], received_at: datetime
) -> DashscopeFile | None:
    status = item.get("subtask_status")
    if not isinstance(status, str):
        raise malformed("a result's subtask_status is missing or not a string", body)
    file_url = item.get("file_url")
    shown_file = file_url if isinstance(file_url, str) and file_url else None
    normalized = status.strip().upper()
    if normalized == "FAILED":
        return DashscopeFile(
            status="failed",
            file_url=shown_file,
            code=_text(item.get("code"), MAX_CODE_CHARS),
            message=_text(item.get("message"), MAX_MESSAGE_CHARS),
        )
    if normalized != "SUCCEEDED":
        return None
    url = item.get("transcription_url")
    if url in (None, ""):
        return None
    if not isinstance(url, str) or not is_http_url(url):
        raise malformed("transcription_url is not an http(s) URL", body)
    return DashscopeFile(
        status="succeeded",
        file_url=shown_file,
        transcription_url=url,
        transcription_url_expires_at=url_expires_at(url, received_at, RESULT_URL_LIFETIME),
    )


def _error(output: dict[str, Any], default_code: str, default_message: str) -> dict[str, Any]:
    """The task's own code and message; else those of its first failed subtask (a FAILED
    file transcription may say why only there); else the defaults."""
    sources = [output]
    results = output.get("results")
    if isinstance(results, list):
        sources += [r for r in results if isinstance(r, dict) and r.get("code")]
    source = next((s for s in sources if _text(s.get("code"), MAX_CODE_CHARS)), output)
    return {
        "code": _text(source.get("code"), MAX_CODE_CHARS) or default_code,
        "message": _text(source.get("message"), MAX_MESSAGE_CHARS) or default_message,
    }


def _text(value: Any, limit: int) -> str | None:
    if isinstance(value, str) and value.strip():
        return clip(value.strip(), limit)
    return None
