"""The provider port: what every upstream adapter implements, and the errors it raises.

An adapter turns one upstream task's current state into a `PollOutcome`, or raises one of:

    ProviderError                 base; never raised itself
    ├── TransientError            timeouts, connection errors, 5xx, malformed bodies,
    │   │                         MiniMax 1000/1001/1024/1033, Jimmy -1: back off, retry
    │   └── RateLimited           MiniMax 1002/1039/2045, HTTP 429: slow the instance down
    ├── CredentialError           MiniMax 1004/2049, Jimmy 20001, HTTP 401/403: pause the
    │                             instance (health auth_failed); tasks wait, they do not fail
    └── TaskError                 unknown task, invalid parameters (MiniMax 2013, Jimmy 20002):
        │                         the task fails with the provider's code
        └── RequestRefused        pollhook would not send the request (its path would leave
                                  the one the adapter asked for): the task fails, nothing sent

Adapters send every request through an `Upstream`, which waits for a slot of the instance's
shared rate budget before each one, so a second request (MiniMax file retrieve) is budgeted
like the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from app.core.config import ProviderKind
from app.models import TaskStatus

RAW_RESPONSE_LIMIT = 8 * 1024


class ProviderError(Exception):
    def __init__(self, message: str, *, code: str | None = None, raw: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw


class TransientError(ProviderError):
    pass


class RateLimited(TransientError):
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


class CredentialError(ProviderError):
    pass


class TaskError(ProviderError):
    pass


class RequestRefused(TaskError):
    """A request pollhook will not send; raised before any budget slot is taken."""


@dataclass(frozen=True)
class PollOutcome:
    """The upstream's answer, normalised.

    `status` is None when the upstream reported a state pollhook does not know; the task
    then keeps its current status (and the raw answer is kept for debugging).
    """

    status: TaskStatus | None
    upstream_status: str | None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class Upstream(Protocol):
    """A budgeted HTTP client bound to one provider instance (base URL, key, timeout)."""

    async def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """GET base_url + path once a budget slot is ours.

        Raises TransientError for timeouts and connection errors.
        """
        ...


class ProviderAdapter(Protocol):
    kind: ProviderKind
    # Budgeted requests a poll that finds the task succeeded sends after the status query
    # (MiniMax: the file retrieve). The schedule's forecast reserves budget for them.
    requests_per_success: int

    async def poll(self, upstream: Upstream, external_id: str) -> PollOutcome:
        """Query the task and return its state; raise a ProviderError subclass otherwise."""
        ...


def cap_raw(value: Any) -> dict[str, Any]:
    """A JSON-safe copy of an upstream answer, at most RAW_RESPONSE_LIMIT bytes as JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= RAW_RESPONSE_LIMIT and isinstance(value, dict):
        return value
    return {"truncated": len(text) > RAW_RESPONSE_LIMIT, "text": text[:RAW_RESPONSE_LIMIT]}
