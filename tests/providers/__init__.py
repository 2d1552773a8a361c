"""Helpers for the adapter tests: a real `HttpUpstream` over `httpx.MockTransport`.

Nothing touches the network or the database; each request is recorded, and every budget slot
the upstream takes is counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from app.core.config import ProviderKind, ProviderSettings
from app.providers.http import HttpUpstream
from app.providers.registry import adapter_for

API_KEY = "sk-test-0123456789"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class Harness:
    upstream: HttpUpstream
    requests: list[httpx.Request] = field(default_factory=list)
    slots: int = 0
    # Each entry is "slot" or "send", so tests can check the slot comes first.
    log: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]


def make_harness(
    handler: Handler,
    *,
    kind: ProviderKind = ProviderKind.MINIMAX_T2A,
    base_url: str = "https://upstream.test",
    api_key: str | None = API_KEY,
    request_timeout_s: float = 5.0,
) -> Harness:
    settings = ProviderSettings(
        kind=kind,
        base_url=base_url,
        api_key=SecretStr(api_key) if api_key is not None else None,
        rate_limit_per_s=10,
        first_poll_delay_s=0,
        min_poll_interval_s=1,
        max_poll_interval_s=10,
        request_timeout_s=request_timeout_s,
        deadline_s=60,
    )

    async def acquire_slot() -> None:
        harness.slots += 1
        harness.log.append("slot")

    async def recording(request: httpx.Request) -> httpx.Response:
        harness.requests.append(request)
        harness.log.append("send")
        response = handler(request)
        if isinstance(response, httpx.Response):
            return response
        return await response

    async def before_send() -> bool:
        # Adapters are tested here, not pacing: nothing stops a request at its last moment.
        return True

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    harness = Harness(
        upstream=HttpUpstream(
            client, settings, acquire_slot, before_send, adapter_for(settings.kind).auth_headers
        )
    )
    return harness


def routes(table: dict[str, Handler]) -> Handler:
    """A handler answering by URL path; an unexpected path fails the test loudly."""

    def handler(request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        path = request.url.path
        assert path in table, f"unexpected request to {path}"
        return table[path](request)

    return handler


def reply(
    body: Any = None,
    *,
    status: int = 200,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler giving a fresh response each time: JSON `body`, or `text` sent verbatim."""

    def build(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return build


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
