"""The provider port: what every upstream adapter implements, and the errors it raises.

An adapter turns one upstream task's current state into a `PollOutcome`, or raises one of:

    ProviderError                 base; never raised itself
    ├── TransientError            timeouts, connection errors, 5xx, malformed bodies,
    │   │                         MiniMax 1000/1001/1024/1033, Jimmy -1: back off, retry
    │   ├── RateLimited           MiniMax 1002/1039/2045, HTTP 429: slow the instance down
    │   └── ResultNotReady        done upstream, result not handed over yet: retried a
    │                             bounded number of polls (RESULT_NOT_READY_POLLS)
    ├── CredentialError           MiniMax 1004/2049, Jimmy 20001, HTTP 401/403: pause the
    │                             instance (health auth_failed); tasks wait, they do not fail
    └── TaskError                 unknown task, invalid parameters (MiniMax 2013, Jimmy 20002):
        │                         the task fails with the provider's code
        └── RequestRefused        pollhook would not send the request (its path would leave
                                  the one the adapter asked for): the task fails, nothing sent

Adapters send every request through an `Upstream`, which waits for a slot of the instance's
shared rate budget before each one, so a second request (MiniMax file retrieve) is budgeted
like the first.

A poll that needs more than one request can record how far it got in its `PollContext`
(`checkpoint`), and the next poll of the task resumes there: the engine stores the
checkpoint with the task however the poll ended, across restarts and replicas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.blobs.views import ArchivedFile
from app.core.config import ProviderKind
from app.core.redaction import Redactor
from app.models import TaskStatus
from app.providers.external_ids import InvalidExternalId

RAW_RESPONSE_LIMIT = 8 * 1024
# Polls in a row that may find a task done upstream but its result not handed over yet
# (Jimmy `completed` without what its model produces, MiniMax `Success` without file_id, a
# File Retrieve answering 2013 or without a URL right after `Success`) before the task
# fails. Public clients see such gaps close within seconds; the transient backoff spaces
# these polls min_poll_interval_s doubling (MiniMax 3 s up to 120 s: about 11 minutes for
# 10; Jimmy 5 s up to 40 s: about 5 minutes), ample for a lagging result and well within
# either deadline, while a task whose result never comes fails with a clear code instead
# of polling until its deadline. docs/providers.md, "Results that are not ready".
RESULT_NOT_READY_POLLS = 10
# The key under which `result_not_ready` counts, in the adapter's checkpoint.
_NOT_READY_KEY = "not_ready"


class WaitReason(StrEnum):
    """Why a task that is still tracked waits: its last poll's error, as the API shows it.
    (A TaskError ends the task instead: its `error` says why.)"""

    AUTH_FAILED = "auth_failed"
    RATE_LIMITED = "rate_limited"
    RESULT_NOT_READY = "result_not_ready"
    TRANSIENT_ERROR = "transient_error"


class CallbackSigning(StrEnum):
    """How a provider's completion callbacks to `POST /v1/inbound/{instance}` prove who sent
    them. A verified callback is only a hint: the task is polled at once, and the poll's
    answer is the truth."""

    # The provider does not call back: polling alone.
    NONE = "none"
    # The provider signs nothing: the instance's secret token in the URL pollhook hands out.
    TOKEN = "token"
    # Signed as Standard Webhooks specifies, with the instance's `whsec_` secret.
    STANDARD_WEBHOOKS = "standard_webhooks"


class ProviderError(Exception):
    # How a task waiting on the error shows it (a TaskError ends the task instead).
    reason: ClassVar[WaitReason] = WaitReason.TRANSIENT_ERROR

    def __init__(self, message: str, *, code: str | None = None, raw: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw

    def redact(self, redactor: Redactor) -> None:
        """Cut the credential out of what is kept and shown of this error: an upstream may
        quote the key it refused, in any encoding (app/core/redaction.py)."""
        self.message = redactor.text(self.message)
        self.args = (self.message,)
        self.code = redactor.text(self.code) if self.code is not None else None
        self.raw = redactor.json(self.raw)


class TransientError(ProviderError):
    pass


class RateLimited(TransientError):
    reason = WaitReason.RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        code: str | None = None,
        raw: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, raw=raw)
        self.retry_after_s = retry_after_s


class ResultNotReady(TransientError):
    """The task is done upstream but its result is not handed over yet (`result_not_ready`)."""

    reason = WaitReason.RESULT_NOT_READY


class CredentialError(ProviderError):
    reason = WaitReason.AUTH_FAILED


class TaskError(ProviderError):
    pass


class RequestRefused(TaskError):
    """A request pollhook will not send; raised before any budget slot is taken."""


class ProviderResult(BaseModel):
    """What a task that succeeded hands over; each adapter defines its own, with a
    `kind` literal naming the provider kind (the discriminator in the API's `result`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Never stored with the result: shown from the task's archive when it is read. Left
    # out rather than null while there is none, so a result reads as it did before the
    # archive existed wherever the archive is off.
    archive: list[ArchivedFile] | None = Field(
        None,
        exclude_if=lambda files: files is None,
        description="The result's files as pollhook's archive holds them, each with a fresh "
        "link: they outlive the provider's URLs. Absent when the archive is off for the "
        "instance or has no files for the task (see the task's `archive`).",
    )


@dataclass(frozen=True)
class ResultFile:
    """A file a succeeded task's result links to, for the archive to copy while its URL
    still works."""

    # `audio` or `subtitle`; `bundle` for a tar archive whose members are copied one by
    # one (MiniMax's result), each then named by its own kind.
    kind: str
    url: str
    # When the URL stops working: its own expiry when it states one, else the provider's
    # documented (or inferred) lifetime from when pollhook got it.
    expires_at: datetime


@dataclass(frozen=True)
class PollOutcome:
    """The upstream's answer, normalised.

    `status` is None when the upstream reported a state pollhook does not know; the task
    then keeps its current status (and the raw answer is kept for debugging).
    """

    status: TaskStatus | None
    upstream_status: str | None
    result: ProviderResult | None = None
    error: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    # The provider's own word on when the task will be done (an ETA, or a queue position
    # times its pace): the task's `estimated_ready_at` then, instead of the learned one.
    ready_at: datetime | None = None

    def redacted(self, redactor: Redactor) -> PollOutcome:
        """The outcome with the credential cut out of everything but `result`: the result is
        what the consumer needs, exactly as the provider gave it, while the rest (the raw
        answer, the upstream's status and error text) is kept and shown for diagnosis."""
        return replace(
            self,
            upstream_status=(
                redactor.text(self.upstream_status) if self.upstream_status is not None else None
            ),
            error=redactor.json(self.error),
            raw=redactor.json(self.raw),
        )


@dataclass
class PollContext:
    """One poll of one task: what the adapter is given, and where it records progress.

    `checkpoint` belongs to the adapter alone; the engine never reads into it. It holds what
    the previous polls of this task stored there (None at first), and the engine stores back
    whatever it holds when this poll ends, however it ends: an outcome, a ProviderError, a
    timeout, a missed budget slot, an unexpected exception. It is cleared when the task
    ends. Keep it small and JSON-serialisable (it is a jsonb column); set it as soon as
    there is progress to keep, before the next request, not only on success."""

    external_id: str
    checkpoint: dict[str, Any] | None = None


class Upstream(Protocol):
    """A budgeted HTTP client bound to one provider instance (base URL, key, timeout)."""

    async def get(
        self, path: str, params: dict[str, str] | None = None, *, max_bytes: int | None = None
    ) -> httpx.Response:
        """GET base_url + path once a budget slot is ours.

        Raises TransientError for timeouts and connection errors, and for a body larger than
        `max_bytes` (None: the shared default, app/providers/http.py MAX_RESPONSE_BYTES).
        """
        ...


class ProviderAdapter(Protocol):
    """One provider kind: everything pollhook knows of it lives in its adapter's module
    (app/providers/<kind>.py), and the engine reaches it only through this port."""

    kind: ProviderKind
    # Budgeted requests a poll that finds the task succeeded sends after the status query
    # (MiniMax: the file retrieve). The schedule's forecast reserves budget for them.
    requests_per_success: int

    def normalize_id(self, raw: object) -> str:
        """The canonical text of an upstream task id as a client registers it (a JSON
        string or number); raises InvalidExternalId (app/providers/external_ids.py) with
        the reason it cannot be one of this provider's ids."""
        ...

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry the instance's key on every request to the provider
        (`Authorization: Bearer <key>`, `xi-api-key: <key>`, ...)."""
        ...

    # How the provider's completion callbacks are verified (NONE: it sends none).
    callbacks: CallbackSigning

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        """The upstream task id a callback names, in the canonical form `normalize_id`
        gives; None when it names none this provider could have sent. `query` holds the
        inbound URL's parameters besides the token: what the URL handed to the provider
        added for a body that names the task only in part (fal: `model`)."""
        ...

    async def poll(self, upstream: Upstream, context: PollContext) -> PollOutcome:
        """Query the task and return its state; raise a ProviderError subclass otherwise.
        Progress worth resuming from goes into `context.checkpoint`."""
        ...

    def result_files(self, result: ProviderResult, received_at: datetime) -> list[ResultFile]:
        """The files `result` (this adapter's own) links to, with when each URL dies, for
        the archive; `received_at` is when pollhook got the result."""
        ...


def require_canonical(normalize: Callable[[object], str], external_id: str) -> None:
    """A stored id that is not this provider's canonical form is never sent: registration
    refuses such ids, and one stored before it did fails its task, unsent, with
    `invalid_external_id`. `normalize` is the adapter's `normalize_id`."""
    try:
        canonical = normalize(external_id)
    except InvalidExternalId as exc:
        raise TaskError(f"external_id {exc}", code="invalid_external_id") from None
    if canonical != external_id:
        raise TaskError("external_id is not in its canonical form", code="invalid_external_id")


def result_not_ready(
    context: PollContext,
    message: str,
    *,
    final_code: str,
    raw: dict[str, Any] | None,
) -> ProviderError:
    """One more poll that found the task done upstream but its result not there (yet),
    counted in the checkpoint: the TransientError to retry it with, or, on the
    RESULT_NOT_READY_POLLS-th such poll in a row, the TaskError that fails the task with
    `final_code`. Other keys of the checkpoint are kept."""
    checkpoint = dict(context.checkpoint or {})
    seen = checkpoint.get(_NOT_READY_KEY)
    seen = (seen if isinstance(seen, int) and not isinstance(seen, bool) else 0) + 1
    checkpoint[_NOT_READY_KEY] = seen
    context.checkpoint = checkpoint
    if seen >= RESULT_NOT_READY_POLLS:
        return TaskError(f"{message}, {seen} polls in a row", code=final_code, raw=raw)
    return ResultNotReady(
        f"{message} (poll {seen} of at most {RESULT_NOT_READY_POLLS})",
        code="result_not_ready",
        raw=raw,
    )


def cap_raw(value: Any) -> dict[str, Any]:
    """A JSON-safe copy of an upstream answer, at most RAW_RESPONSE_LIMIT bytes as JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= RAW_RESPONSE_LIMIT and isinstance(value, dict):
        return value
    return {"truncated": len(text) > RAW_RESPONSE_LIMIT, "text": text[:RAW_RESPONSE_LIMIT]}
