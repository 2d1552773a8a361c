"""What MiniMax's async APIs share: a task is queried on its own route, and once MiniMax
says Success its `file_id` is resolved through File Retrieve into a signed download URL.

T2A async (`minimax_t2a`) and video generation (`minimax_video`) differ only in the query
route, their ids, what a Success answer carries besides `file_id`, and the result model;
each adapter is a `MinimaxAsyncAdapter` that says so, and everything else lives here once.
The facts relied on, with their sources, are in docs/providers.md (both MiniMax sections).

MiniMax reports business errors in `base_resp.status_code`, usually with HTTP 200 (2049
has been seen with HTTP 401), so base_resp is read first on every answer and the HTTP
status only decides when there is none.

A poll that finds the task done takes two requests, the status query and the File
Retrieve. Once MiniMax said Success the file_id goes into the checkpoint before the
retrieve is sent, so a retrieve that fails, times out or misses its budget slot is retried
on its own: the status, which cannot change any more, is not asked for again.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core.config import ProviderKind
from app.core.http_client import retry_after_seconds
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CredentialError,
    PollContext,
    PollOutcome,
    ProviderError,
    ProviderResult,
    RateLimited,
    TaskError,
    TransientError,
    Upstream,
    cap_raw,
    result_not_ready,
)
from app.providers.external_ids import path_segment_problem
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_unless_success,
    url_expires_at,
)

RETRIEVE_PATH = "/v1/files/retrieve"
DOWNLOAD_URL_TTL = timedelta(seconds=32_400)
MAX_FILENAME_CHARS = 255

# Rate-limit codes and the least pause each asks for (None: the engine's own backoff, or the
# Retry-After header when there is one). 1041 (connection limit) wants "a longer delay". 2056 is
# the Token Plan's 5-hour usage window: 5 min keeps the probing cheap without a blind 5 h pause.
RATE_LIMIT_CODES: dict[int, float | None] = {
    1002: None,
    1039: None,
    2045: None,
    1041: 60.0,
    2056: 300.0,
}
# 1008 (insufficient balance) on a *query* is the account's problem, not the task's: like a
# bad key it would answer every query the same way, so it pauses the instance (tasks wait
# for a top-up) instead of failing every tracked task.
CREDENTIAL_CODES = frozenset({1004, 1008, 2049})
# 2013/20132: invalid params or ids (how an unknown task_id is expected to come back);
# 1026/1027: sensitive content; 1042: illegal characters.
TASK_CODES = frozenset({1026, 1027, 1042, 2013, 20132})
# What File Retrieve may answer for a file_id right after Success, before the file exists:
# retried as not ready rather than failing a task that succeeded.
FILE_NOT_READY_CODES = frozenset({"2013", "20132"})

# Statuses, compared case-insensitively, as MiniMax's async APIs write them: T2A documents
# Processing, Success, Failed and Expired; video Preparing, Queueing, Processing, Success and
# Fail (and its callbacks processing, success, failed). Each adapter understands them all.
_QUEUED = frozenset({"queueing", "preparing"})
_FAILED = frozenset({"failed", "fail"})
_FAILED_DEFAULT = "the provider reported the task failed"
_EXPIRED_DEFAULT = "the provider reported the task expired"
# A DNS host name with at least one dot whose last label is not all digits (so not an IP).
_HOST_NAME = re.compile(
    r"(?=.{3,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?=[a-z0-9-]*[a-z])[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?",
    re.IGNORECASE,
)

logger = get_logger(__name__)


@dataclass(frozen=True)
class RetrievedFile:
    """What File Retrieve handed over for a task's file_id."""

    file_id: str
    download_url: str
    # The earlier of 9 hours from the retrieve and the URL's own expiry.
    expires_at: datetime
    # MiniMax's name for the file when it is a short plain file name, else None.
    filename: str | None


class MinimaxAsyncAdapter(ABC):
    """One MiniMax async API: its query route, plus what it keeps from a Success answer
    and the result it builds; the poll itself is the same for all of them."""

    kind: ProviderKind
    query_path: str
    requests_per_success: int = 1  # files/retrieve, for the download URL

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def details(self, query: dict[str, Any]) -> dict[str, Any]:
        """What a Success answer carries for the result besides file_id (JSON, small: it
        waits in the checkpoint while the file is retrieved); nothing by default."""
        return {}

    @abstractmethod
    def result(self, file: RetrievedFile, details: dict[str, Any]) -> ProviderResult:
        """The adapter's result for a retrieved file and the Success answer's details."""

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        resumed = _Retrieval.of(context.checkpoint)
        if resumed is not None:
            # MiniMax said Success on an earlier poll: only the file is still to be had.
            return await self._retrieve(upstream, context, resumed, query=None)
        external_id = context.external_id
        body = checked(await upstream.get(self.query_path, {"task_id": external_id}))
        raw = cap_raw(body)
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", body)
        task_id = body.get("task_id")
        if task_id is not None and (isinstance(task_id, bool) or str(task_id) != external_id):
            raise malformed(f"the answer is for task_id {clip(str(task_id))}", body)
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "success":
            retrieval = _Retrieval(file_id_of(body, context), shown, self.details(body))
            # Recorded before the retrieve is sent: whatever becomes of it, the next poll
            # resumes there instead of asking for a status that cannot change any more.
            context.checkpoint = retrieval.checkpoint()
            return await self._retrieve(upstream, context, retrieval, query=raw)
        # Not (or no longer) done: a Success without file_id earlier was not the end.
        context.checkpoint = None
        if normalized == "processing":
            return PollOutcome(TaskStatus.PROCESSING, shown, raw=raw)
        if normalized in _QUEUED:
            return PollOutcome(TaskStatus.QUEUED, shown, raw=raw)
        if normalized in _FAILED:
            error = {"code": "failed", "message": status_msg(body) or _FAILED_DEFAULT}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized == "expired":
            error = {"code": "expired", "message": status_msg(body) or _EXPIRED_DEFAULT}
            return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
        logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(None, shown, raw=raw)

    async def _retrieve(
        self,
        upstream: Upstream,
        context: PollContext,
        retrieval: _Retrieval,
        query: dict[str, Any] | None,
    ) -> PollOutcome:
        """file_id → a fresh download URL. `file_id` alone proves nothing: T2A gives it from
        creation on, so this runs only once the status said Success."""
        # Taken before the request: the URL is minted during it, so the expiry errs early.
        issued_at = self._clock()
        try:
            body = checked(await upstream.get(RETRIEVE_PATH, {"file_id": retrieval.file_id}))
        except TaskError as exc:
            if exc.code not in FILE_NOT_READY_CODES:
                raise
            raise result_not_ready(
                context,
                f"File Retrieve answered {exc.code} ({clip(exc.message)}) after Success",
                final_code="result_unavailable",
                raw=exc.raw,
            ) from None
        file = body.get("file")
        if file is not None and not isinstance(file, dict):
            raise malformed("file is not an object", body)
        file = file or {}
        url = _download_url(file, body)
        if url is None:
            raise result_not_ready(
                context,
                "File Retrieve gave neither download_url nor backup_download_url",
                final_code="result_unavailable",
                raw=cap_raw(body),
            )
        retrieved = RetrievedFile(
            file_id=retrieval.file_id,
            download_url=url,
            expires_at=url_expires_at(url, issued_at, DOWNLOAD_URL_TTL),
            filename=_filename(file.get("filename")),
        )
        raw = (
            {"retrieve": cap_raw(body)}
            if query is None
            else {"query": query, "retrieve": cap_raw(body)}
        )
        result = self.result(retrieved, retrieval.details)
        return PollOutcome(TaskStatus.SUCCEEDED, retrieval.status, result=result, raw=raw)


@dataclass(frozen=True)
class _Retrieval:
    """What the checkpoint holds once MiniMax said Success: the file to retrieve, the
    status as MiniMax wrote it (shown as upstream_status), and the adapter's details."""

    file_id: str
    status: str
    details: dict[str, Any] = field(default_factory=dict)

    def checkpoint(self) -> dict[str, Any]:
        checkpoint: dict[str, Any] = {"file_id": self.file_id, "status": self.status}
        if self.details:
            checkpoint["details"] = self.details
        return checkpoint

    @classmethod
    def of(cls, checkpoint: dict[str, Any] | None) -> _Retrieval | None:
        """The retrieval a checkpoint records; None when it records none (or not in a
        shape this version wrote: then the status is asked for again)."""
        if not isinstance(checkpoint, dict):
            return None
        file_id, status = checkpoint.get("file_id"), checkpoint.get("status")
        if not isinstance(file_id, str) or parse_file_id(file_id) != file_id:
            return None
        details = checkpoint.get("details")
        return cls(
            file_id,
            status if isinstance(status, str) else "Success",
            details if isinstance(details, dict) else {},
        )


def _download_url(file: dict[str, Any], body: dict[str, Any]) -> str | None:
    """`download_url`, else `backup_download_url`, as an absolute http(s) URL; None when
    neither is there.

    A schemeless URL, as in MiniMax's own File Retrieve example ("www.downloadurl.com"),
    means https:// when what comes before its first "/" is a DNS host name with a dot
    (MiniMax serves its files over HTTPS); anything else that is not an absolute http(s)
    URL is malformed (docs/providers.md)."""
    for name in ("download_url", "backup_download_url"):
        value = file.get(name)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise malformed(f"{name} is not a string", body)
        if is_http_url(value):
            return value
        schemeless = "https://" + value
        host = value.split("/", 1)[0]
        if _HOST_NAME.fullmatch(host) and is_http_url(schemeless):
            return schemeless
        raise malformed(f"{name} is not an http(s) URL", body)
    return None


def _filename(value: Any) -> str | None:
    """MiniMax's name for the file (`<id>.tar`, `output.mp4`), when it is a short plain
    file name."""
    if value in (None, ""):
        return None
    if (
        isinstance(value, str)
        and len(value) <= MAX_FILENAME_CHARS
        and path_segment_problem(value) is None
    ):
        return value
    logger.warning("provider.bad_filename", filename=clip(str(value)))
    return None


def checked(response: httpx.Response) -> dict[str, Any]:
    """The body of an answer whose base_resp says 0; raises the matching ProviderError."""
    try:
        body = json_object(response)
    except TransientError:
        raise_unless_success(response)
        raise
    base = body.get("base_resp")
    code = base.get("status_code") if isinstance(base, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        raise_unless_success(response)
        raise malformed("no base_resp.status_code in the answer", body)
    if code != 0:
        raise _classify(code, response, body)
    # A 0 that comes with an error status contradicts itself; trust the error.
    raise_unless_success(response)
    return body


def _classify(code: int, response: httpx.Response, body: dict[str, Any]) -> ProviderError:
    message = status_msg(body) or f"MiniMax status_code {code}"
    raw = cap_raw(body)
    if code in RATE_LIMIT_CODES:
        waits = [
            w
            for w in (
                RATE_LIMIT_CODES[code],
                retry_after_seconds(response.headers.get("retry-after")),
            )
            if w is not None
        ]
        return RateLimited(message, retry_after_s=max(waits, default=None), code=str(code), raw=raw)
    if code in CREDENTIAL_CODES:
        return CredentialError(message, code=str(code), raw=raw)
    if code in TASK_CODES:
        return TaskError(message, code=str(code), raw=raw)
    # Documented retryable codes (1000/1001/1024/1033) and any code not known yet: an unknown
    # code must never fail a task, the deadline bounds the retries.
    return TransientError(message, code=str(code), raw=raw)


def status_msg(body: dict[str, Any]) -> str | None:
    base = body.get("base_resp")
    msg = base.get("status_msg") if isinstance(base, dict) else None
    # base_resp says "success" for any answer it accepted, including a Failed task.
    if not isinstance(msg, str) or not msg.strip() or msg.strip().lower() == "success":
        return None
    return clip(msg.strip(), 500)


def file_id_of(query: dict[str, Any], context: PollContext) -> str:
    """The Success answer's file_id, canonical; not ready while it is missing."""
    value = query.get("file_id")
    if value is None or value in (0, "", "0"):
        # Public clients see Success briefly without file_id and retry; so do we, a bounded
        # number of times.
        raise result_not_ready(
            context,
            "status Success without a file_id",
            final_code="incomplete_result",
            raw=cap_raw(query),
        )
    file_id = parse_file_id(value)
    if file_id is None:
        raise malformed("file_id is not a positive 64-bit integer", query)
    return file_id


def parse_file_id(value: Any) -> str | None:
    """A positive int64 (a JSON number or decimal digits) as canonical text; else None."""
    is_number = isinstance(value, int) and not isinstance(value, bool)
    is_digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20
    if not (is_number or is_digits) or not 0 < int(value) < 2**63:
        return None
    return str(int(value))
