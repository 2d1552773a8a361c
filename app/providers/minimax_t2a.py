"""MiniMax T2A async: query the task, and on success resolve its file_id via File Retrieve.

See docs/upstreams.md §2.3, §2.4, §2.7. MiniMax reports business errors in
`base_resp.status_code`, usually with HTTP 200 (2049 has been seen with HTTP 401), so base_resp
is read first on every answer and the HTTP status only decides when there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core.config import ProviderKind
from app.core.logging import get_logger
from app.models import TaskStatus
from app.providers.base import (
    CredentialError,
    PollOutcome,
    ProviderError,
    RateLimited,
    TaskError,
    TransientError,
    Upstream,
    cap_raw,
)
from app.providers.http import (
    clip,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    retry_after_seconds,
    unexpected_status,
)

QUERY_PATH = "/v1/query/t2a_async_query_v2"
RETRIEVE_PATH = "/v1/files/retrieve"
DOWNLOAD_URL_TTL = timedelta(seconds=32_400)

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

_FAILED_DEFAULT = "the provider reported the task failed"
_EXPIRED_DEFAULT = "the provider reported the task expired"

logger = get_logger(__name__)


class MinimaxT2AAdapter:
    kind: ProviderKind = ProviderKind.MINIMAX_T2A
    requests_per_success: int = 1  # files/retrieve, for the download URL

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    async def poll(self, upstream: Upstream, external_id: str) -> PollOutcome:
        body = _checked(await upstream.get(QUERY_PATH, {"task_id": external_id}))
        raw = cap_raw(body)
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", body)
        task_id = body.get("task_id")
        if task_id is not None and (isinstance(task_id, bool) or str(task_id) != external_id):
            raise malformed(f"the answer is for task_id {clip(str(task_id))}", body)
        shown = clip(status)
        match status.strip().lower():
            case "processing":
                return PollOutcome(TaskStatus.PROCESSING, shown, raw=raw)
            case "success":
                result, retrieved = await self._resolve(upstream, body)
                return PollOutcome(
                    TaskStatus.SUCCEEDED,
                    shown,
                    result=result,
                    raw={"query": raw, "retrieve": retrieved},
                )
            case "failed":
                error = {"code": "failed", "message": _status_msg(body) or _FAILED_DEFAULT}
                return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
            case "expired":
                error = {"code": "expired", "message": _status_msg(body) or _EXPIRED_DEFAULT}
                return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
        logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(None, shown, raw=raw)

    async def _resolve(
        self, upstream: Upstream, query: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """file_id → a fresh download URL. `file_id` alone proves nothing: it exists from
        creation on, so this runs only once the status says Success."""
        file_id = _file_id(query)
        # Taken before the request: the URL is minted during it, so the expiry errs early.
        issued_at = self._clock()
        body = _checked(await upstream.get(RETRIEVE_PATH, {"file_id": file_id}))
        file = body.get("file")
        url = file.get("download_url") if isinstance(file, dict) else None
        if file is not None and not isinstance(file, dict):
            raise malformed("file is not an object", body)
        if url is None or url == "":
            raise TransientError(
                "File Retrieve gave no download_url", code="missing_download_url", raw=cap_raw(body)
            )
        if not isinstance(url, str) or not is_http_url(url):
            raise malformed("download_url is not an http(s) URL", body)
        expires_at = (issued_at + DOWNLOAD_URL_TTL).astimezone(UTC).replace(microsecond=0)
        result = {
            "file_id": file_id,
            "download_url": url,
            "download_url_expires_at": expires_at.isoformat().replace("+00:00", "Z"),
        }
        return result, cap_raw(body)


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The body of an answer whose base_resp says 0; raises the matching ProviderError."""
    try:
        body = json_object(response)
    except TransientError:
        _raise_for_status(response)
        raise
    base = body.get("base_resp")
    code = base.get("status_code") if isinstance(base, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        _raise_for_status(response)
        raise malformed("no base_resp.status_code in the answer", body)
    if code != 0:
        raise _classify(code, response, body)
    # A 0 that comes with an error status contradicts itself; trust the error.
    _raise_for_status(response)
    return body


def _raise_for_status(response: httpx.Response) -> None:
    raise_for_http_status(response)
    if not response.is_success:
        raise unexpected_status(response)


def _classify(code: int, response: httpx.Response, body: dict[str, Any]) -> ProviderError:
    message = _status_msg(body) or f"MiniMax status_code {code}"
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


def _status_msg(body: dict[str, Any]) -> str | None:
    base = body.get("base_resp")
    msg = base.get("status_msg") if isinstance(base, dict) else None
    # base_resp says "success" for any answer it accepted, including a Failed task.
    if not isinstance(msg, str) or not msg.strip() or msg.strip().lower() == "success":
        return None
    return clip(msg.strip(), 500)


def _file_id(query: dict[str, Any]) -> str:
    value = query.get("file_id")
    if value is None or value in (0, "", "0"):
        # Public clients see Success briefly without file_id and retry; so do we.
        raise TransientError(
            "status Success without a file_id", code="missing_file_id", raw=cap_raw(query)
        )
    is_number = isinstance(value, int) and not isinstance(value, bool)
    is_digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20
    if not (is_number or is_digits) or not 0 < int(value) < 2**63:
        raise malformed("file_id is not a positive 64-bit integer", query)
    return str(int(value))
