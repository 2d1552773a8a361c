"""Replicate predictions: one GET per poll, answered with the prediction object itself.

The facts relied on here, with their sources, are in docs/providers.md ("Replicate
predictions"). Errors come as RFC 7807 problem details (`{title, detail, status}`) whose
HTTP status says what went wrong, so the status decides and the detail explains. `output`
is whatever the model returns (a URL, a list of URLs, text, any JSON): the result keeps it
as given and lists the URLs in it for consumers and the archive. Replicate deletes output
and its files an hour after the prediction ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import Field, JsonValue

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
from app.providers.external_ids import InvalidExternalId, id_text
from app.providers.http import (
    clip,
    finite_number,
    is_http_url,
    json_object,
    malformed,
    raise_for_http_status,
    unexpected_status,
    url_expires_at,
)

QUERY_PATH = "/v1/predictions/"
# "All input parameters, output values, output files, and logs are automatically removed
# after an hour" for predictions created through the API.
OUTPUT_LIFETIME = timedelta(hours=1)
MAX_PREDICTION_ID_CHARS = 64
# Output is model-specific JSON; its URLs are looked for this deep and kept up to this many.
MAX_OUTPUT_DEPTH = 8
MAX_OUTPUT_URLS = 100
MAX_FIELD_CHARS = 256

_STATUSES = {"starting": TaskStatus.QUEUED, "processing": TaskStatus.PROCESSING}
_CANCELLED = frozenset({"canceled", "cancelled"})
# Payment required is the account's credit, not the task's: like a refused key it would
# answer every query alike, so the instance pauses and tasks wait for a top-up.
_CREDENTIAL_STATUSES = frozenset({401, 402, 403})
# The 429 body says "Your rate limit resets in ~30s."; read when Retry-After is missing.
_RESETS_IN = re.compile(r"resets in ~?(\d{1,5}) ?s", re.IGNORECASE)

logger = get_logger(__name__)


class ReplicateResult(ProviderResult):
    """A prediction that succeeded: what the model returned, and the URLs in it."""

    kind: Literal["replicate"] = Field(description="The provider kind.")
    output_urls: list[str] = Field(
        description="Every http(s) URL in `output`, in order, without repeats: the file a "
        "model returns as a bare URL, each file of a list, or URLs nested in an object. "
        "Empty when the output holds none (text, numbers). Replicate deletes these files an "
        "hour after the prediction ended (`output_expires_at`)."
    )
    output: JsonValue = Field(
        description="`output` exactly as Replicate gave it: its shape is the model's "
        "(a URL string, a list of URLs, text, or any JSON)."
    )
    output_expires_at: datetime = Field(
        description="When Replicate deletes the output and its files: an hour after "
        "`completed_at`, or after pollhook got the result if that is earlier or Replicate "
        "gave no `completed_at`."
    )
    model: str | None = Field(
        None, description="`model`: the model's `owner/name`.", examples=["replicate/hello-world"]
    )
    version: str | None = Field(
        None, description="`version`: the id of the model version that ran."
    )
    predict_time_s: float | None = Field(
        None,
        description="`metrics.predict_time`: seconds the model's predict() ran, what "
        "Replicate bills by time for. Null when Replicate gave none.",
    )
    created_at: datetime | None = Field(None, description="`created_at`.")
    started_at: datetime | None = Field(
        None, description="`started_at`: when the model began (after any cold boot)."
    )
    completed_at: datetime | None = Field(None, description="`completed_at`.")
    get_url: str | None = Field(
        None, description="`urls.get`: the prediction's own API URL (needs the API token)."
    )


def prediction_id(raw: object) -> str:
    """A Replicate prediction id: ASCII letters and digits (they are written like
    `gm3qorzdhgbfurvjtvhg6dckhu`), so it stands as one path segment as it is."""
    raw = id_text(raw, MAX_PREDICTION_ID_CHARS)
    if not (raw.isascii() and raw.isalnum()):
        raise InvalidExternalId(
            "must be ASCII letters and digits only, as Replicate's prediction ids are "
            "(e.g. gm3qorzdhgbfurvjtvhg6dckhu)"
        )
    return raw


class ReplicateAdapter:
    kind: ProviderKind = ProviderKind.REPLICATE
    requests_per_success: int = 0

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock

    def normalize_id(self, raw: object) -> str:
        return prediction_id(raw)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # Webhooks given at creation are signed as Standard Webhooks specifies, with the
    # account's `whsec_` secret (GET /v1/webhooks/default/secret).
    callbacks: CallbackSigning = CallbackSigning.STANDARD_WEBHOOKS

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        # The body is the prediction object itself: its `id` names it.
        try:
            return self.normalize_id(body.get("id"))
        except InvalidExternalId:
            return None

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        assert isinstance(result, ReplicateResult)
        return [
            ResultFile(
                "output",
                url,
                min(url_expires_at(url, received_at, OUTPUT_LIFETIME), result.output_expires_at),
            )
            for url in result.output_urls
        ]

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        external_id = context.external_id
        require_canonical(self.normalize_id, external_id)
        # Taken before the request: output expiry then errs early, never late.
        received_at = self._clock()
        body = _checked(await upstream.get(QUERY_PATH + external_id))
        status = body.get("status")
        if not isinstance(status, str):
            raise malformed("status is missing or not a string", body)
        answer_id = body.get("id")
        if answer_id != external_id:
            # An answer about another prediction (or none named) must not end this one.
            raise malformed(f"the answer is for id {clip(repr(answer_id))}", body)
        raw = cap_raw(body)
        shown = clip(status)
        normalized = status.strip().lower()
        if normalized == "succeeded":
            return _succeeded(body, raw, shown, context, received_at)
        if normalized == "failed":
            message = _error_text(body) or "the prediction failed"
            return PollOutcome(
                TaskStatus.FAILED, shown, error={"code": "failed", "message": message}, raw=raw
            )
        if normalized in _CANCELLED:
            message = _error_text(body) or (
                "the prediction was canceled (by its creator, or its deadline passed after "
                "it started)"
            )
            error = {"code": "cancelled_upstream", "message": message}
            return PollOutcome(TaskStatus.FAILED, shown, error=error, raw=raw)
        if normalized == "aborted":
            message = _error_text(body) or "the prediction's deadline passed before it started"
            error = {"code": "aborted", "message": message}
            return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
        # Still running: a succeeded answer without output earlier was not the end.
        context.checkpoint = None
        mapped = _STATUSES.get(normalized)
        if mapped is None:
            logger.warning("provider.unknown_status", kind=self.kind.value, upstream_status=shown)
        return PollOutcome(mapped, shown, raw=raw)


def _succeeded(
    body: dict[str, Any],
    raw: dict[str, Any],
    shown: str,
    context: PollContext,
    received_at: datetime,
) -> PollOutcome:
    output = body.get("output")
    if output is None:
        if body.get("data_removed") is True:
            # Polled more than an hour after the end: Replicate has deleted what it made.
            error = {
                "code": "data_removed",
                "message": "Replicate deleted the prediction's output (an hour after it "
                "ended) before pollhook read it",
            }
            return PollOutcome(TaskStatus.EXPIRED, shown, error=error, raw=raw)
        raise result_not_ready(
            context, "succeeded without output", final_code="incomplete_result", raw=raw
        )
    completed_at = _timestamp(body, "completed_at")
    ended = received_at if completed_at is None else min(completed_at, received_at)
    metrics = body.get("metrics")
    urls = body.get("urls")
    result = ReplicateResult(
        kind="replicate",
        output_urls=_output_urls(output),
        output=output,
        output_expires_at=(ended + OUTPUT_LIFETIME).astimezone(UTC).replace(microsecond=0),
        model=_text(body.get("model")),
        version=_text(body.get("version")),
        predict_time_s=_seconds(metrics.get("predict_time") if isinstance(metrics, dict) else None),
        created_at=_timestamp(body, "created_at"),
        started_at=_timestamp(body, "started_at"),
        completed_at=completed_at,
        get_url=_url(urls.get("get") if isinstance(urls, dict) else None),
    )
    return PollOutcome(TaskStatus.SUCCEEDED, shown, result=result, raw=raw)


def _output_urls(output: Any) -> list[str]:
    """The http(s) URLs in `output`, depth first in document order, each once."""
    found: list[str] = []

    def walk(value: Any, depth: int) -> None:
        if len(found) >= MAX_OUTPUT_URLS or depth > MAX_OUTPUT_DEPTH:
            return
        if isinstance(value, str):
            if is_http_url(value) and value not in found:
                found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth + 1)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)

    walk(output, 0)
    return found


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The prediction of a 2xx answer; raises the matching ProviderError otherwise."""
    if response.is_success:
        return json_object(response)
    problem = _problem(response)
    if problem is None:
        # Not Replicate's own error shape (a proxy, a wrong base URL): the status alone.
        raise_for_http_status(response)
        raise unexpected_status(response)
    raise _classify(response, problem)


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    """The RFC 7807 body of an error answer (`detail` and/or `title`), or None."""
    try:
        body = json_object(response)
    except TransientError:
        return None
    if isinstance(body.get("detail"), str) or isinstance(body.get("title"), str):
        return body
    return None


def _classify(response: httpx.Response, problem: dict[str, Any]) -> ProviderError:
    status = response.status_code
    code = f"http_{status}"
    message = _problem_text(problem) or f"HTTP {status}"
    raw = cap_raw(problem)
    if status in _CREDENTIAL_STATUSES:
        return CredentialError(message, code=code, raw=raw)
    if status == 429:
        wait = retry_after_seconds(response.headers.get("retry-after"))
        if wait is None and (resets := _RESETS_IN.search(message)) is not None:
            wait = float(resets.group(1))
        return RateLimited(message, retry_after_s=wait, code=code, raw=raw)
    if status == 404:
        # Replicate's own "not found" for the prediction: an unknown id, or another
        # account's. A 404 without its problem body is left to the status alone (transient).
        return TaskError(message, code=code, raw=raw)
    # 5xx, 408, and anything not listed: an unknown answer must never fail a task.
    return TransientError(message, code=code, raw=raw)


def _problem_text(problem: dict[str, Any]) -> str | None:
    for name in ("detail", "title"):
        value = problem.get(name)
        if isinstance(value, str) and value.strip():
            return clip(value.strip(), 500)
    return None


def _error_text(body: dict[str, Any]) -> str | None:
    """The prediction's `error`: a string as documented; other JSON is shown as text."""
    value = body.get("error")
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    return clip(text.strip(), 500) or None


def _text(value: Any) -> str | None:
    return clip(value, MAX_FIELD_CHARS) if isinstance(value, str) and value else None


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and is_http_url(value) else None


def _seconds(value: Any) -> float | None:
    seconds = finite_number(value)
    return seconds if seconds is not None and 0 <= seconds < 10**9 else None


def _timestamp(body: dict[str, Any], name: str) -> datetime | None:
    """An ISO 8601 time such as `2023-09-08T16:19:34.765994Z`, in UTC; None when absent
    or unreadable (they inform, they decide nothing a bad one could break)."""
    value = body.get(name)
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        # An offset that carries the time past year 1 or 9999 cannot be held in UTC.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        logger.warning("provider.bad_timestamp", field=name, value=clip(value))
        return None
