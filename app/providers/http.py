"""The HTTP side of the provider port: a budgeted `Upstream`, and helpers shared by adapters.

Everything an upstream sends is untrusted: bodies are size-capped, parsed defensively, and
every failure becomes a `ProviderError` so the poll loop never sees a raw httpx exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from app import __version__
from app.core.config import ProviderSettings
from app.core.http_client import read_at_most, retry_after_seconds
from app.core.http_stream import on_next_write
from app.core.metrics import SEND_DELAY_SECONDS
from app.providers.base import (
    CredentialError,
    RateLimited,
    RequestRefused,
    TransientError,
    cap_raw,
)

MAX_RESPONSE_BYTES = 1024 * 1024
EXCERPT_CHARS = 512
MAX_URL_CHARS = 8192
USER_AGENT = f"pollhook/{__version__}"

# The body handed to adapters is already decoded, so these would describe the wrong bytes.
_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class HttpUpstream:
    """An `Upstream` for one provider instance, sharing one httpx client with the others."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ProviderSettings,
        acquire_slot: Callable[[], Awaitable[None]],
        before_send: Callable[[], Awaitable[bool]],
        auth_headers: Callable[[str], dict[str, str]],
    ) -> None:
        """`acquire_slot` waits for a budget slot; `before_send` runs at the last moment
        before the request's first byte is written (after any connection setup) and says
        whether the request may go: False sends nothing and starts over from
        `acquire_slot` (the slot was missed), an exception aborts it with nothing sent.
        `auth_headers` is the adapter's: the headers that carry the instance's key."""
        self._client = client
        self._settings = settings
        self._acquire_slot = acquire_slot
        self._before_send = before_send
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        if key:
            self._headers.update(auth_headers(key))
        self._base_path = _path_of(httpx.URL(settings.base_url)).rstrip(b"/")

    async def get(
        self, path: str, params: dict[str, str] | None = None, *, max_bytes: int | None = None
    ) -> httpx.Response:
        limit = MAX_RESPONSE_BYTES if max_bytes is None else max_bytes
        timeout = self._settings.request_timeout_s
        request = self._client.build_request(
            "GET",
            self._settings.base_url + path,
            params=params,
            headers=self._headers,
            timeout=timeout,
            extensions={"trace": _SendTrace(self._before_send)},
        )
        self._check_path(request, path)
        try:
            while True:
                await self._acquire_slot()
                with contextlib.suppress(_SlotMissed):
                    # httpx's timeout bounds each read, not the exchange; a server dripping
                    # one byte per read would otherwise hold a poll (and its lease) for as
                    # long as it likes.
                    async with asyncio.timeout(timeout):
                        return await self._exchange(request, limit)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise TransientError(f"no answer within {timeout:g} s", code="timeout") from exc
        except httpx.DecodingError as exc:
            raise TransientError(
                f"undecodable response body: {exc}", code="malformed_response"
            ) from exc
        except httpx.RequestError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}", code="connection_error") from exc

    def _check_path(self, request: httpx.Request, path: str) -> None:
        """The keyed request goes to base path + `path`, byte for byte, or not at all.

        httpx resolves dot segments (".../audios/.." is ".../v1"), so a path built from an
        upstream id could otherwise reach another endpoint with our key, and its answer
        would be read as the task's. Adapters validate ids; this holds whatever they miss."""
        sent = _path_of(request.url)
        if sent != self._base_path + path.encode("ascii", "replace"):
            raise RequestRefused(
                f"refused to send: the request path {clip(sent.decode('ascii', 'replace'))} "
                f"is not the one asked for ({clip(path)})",
                code="request_path_refused",
            )

    async def _exchange(self, request: httpx.Request, limit: int) -> httpx.Response:
        response = await self._client.send(request, stream=True, follow_redirects=False)
        try:
            body = await _read_capped(response, limit)
        finally:
            await response.aclose()
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _FRAMING_HEADERS
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )


class _SlotMissed(Exception):
    """The request reached its last moment too late for its slot: nothing was sent."""


class _SendTrace:
    """httpcore's trace hook for one request: the send check, and how long after it the
    headers were handed to the transport. On the worker's transport (app/core/http_stream.py)
    nothing is awaited between the check and the write, and the write itself takes the
    stamp; on another one, the headers' "complete" event does, later."""

    def __init__(self, before_send: Callable[[], Awaitable[bool]]) -> None:
        self._before_send = before_send
        self._checked_at: float | None = None
        self._written_at: float | None = None

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        # Just before the request headers are written: connecting (TCP, TLS) is over, so a
        # slot that passed meanwhile can still be given up unsent.
        if event.endswith("send_request_headers.started"):
            if not await self._before_send():
                raise _SlotMissed
            self._checked_at = time.monotonic()
            self._written_at = None
            on_next_write(self._written)
        elif event.endswith("send_request_headers.complete") and self._checked_at is not None:
            written_at = self._written_at or time.monotonic()
            SEND_DELAY_SECONDS.observe(written_at - self._checked_at)
            self._checked_at = None

    def _written(self) -> None:
        self._written_at = time.monotonic()


def _path_of(url: httpx.URL) -> bytes:
    """The URL's path as sent on the wire, without its query."""
    return url.raw_path.split(b"?", 1)[0]


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(response, limit)
    # Decoded bytes: a small gzip bomb is refused by what it inflates to.
    body, cut = await read_at_most(response.aiter_bytes(), limit)
    if cut:
        raise _too_large(response, limit)
    return body


def _too_large(response: httpx.Response, limit: int) -> TransientError:
    return TransientError(
        f"response body larger than {limit} bytes",
        code="response_too_large",
        raw={"http_status": response.status_code},
    )


def excerpt(response: httpx.Response) -> dict[str, Any]:
    """A short, storable trace of a response that could not be used."""
    text = _clean(response.content[: EXCERPT_CHARS * 4].decode("utf-8", "replace"))
    return cap_raw({"http_status": response.status_code, "body": text[:EXCERPT_CHARS]})


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object, or TransientError("malformed_response")."""
    try:
        value = _clean(
            json.loads(response.content, parse_constant=_reject_constant, parse_float=_finite_float)
        )
    except (ValueError, RecursionError):
        content_type = response.headers.get("content-type", "")
        looks_html = "html" in content_type or response.content.lstrip()[:1] == b"<"
        what = "an HTML page" if looks_html else "a body that is not JSON"
        raise TransientError(
            f"HTTP {response.status_code} with {what}",
            code="malformed_response",
            raw=excerpt(response),
        ) from None
    if not isinstance(value, dict):
        raise TransientError(
            f"HTTP {response.status_code} with JSON that is not an object",
            code="malformed_response",
            raw=excerpt(response),
        )
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400 parses as inf: jsonb refuses it, and no provider means it.
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def finite_number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (a bool, a string, an integer
    too large for a float). For the optional figures of a result (durations, confidences)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and Postgres jsonb refuses them when the raw is stored.
    raise ValueError(f"non-standard JSON constant {name}")


def _clean(value: Any) -> Any:
    """Make upstream strings storable in Postgres text/jsonb, which refuse NUL and lone
    surrogates (both legal in JSON escapes)."""
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:
            return value
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def raise_for_http_status(response: httpx.Response) -> None:
    """Raise for the statuses whose meaning is the same at every provider; return otherwise."""
    status = response.status_code
    code = f"http_{status}"
    if status in (401, 403):
        raise CredentialError(
            f"HTTP {status}: credentials refused", code=code, raw=excerpt(response)
        )
    if status == 429:
        raise RateLimited(
            "HTTP 429: rate limited",
            retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
            code=code,
            raw=excerpt(response),
        )
    if status == 408 or status >= 500:
        raise TransientError(f"HTTP {status}", code=code, raw=excerpt(response))


def raise_unless_success(response: httpx.Response) -> None:
    """`raise_for_http_status`, then `unexpected_status` for any other non-2xx: for an
    answer whose body said nothing more specific; return for a 2xx."""
    raise_for_http_status(response)
    if not response.is_success:
        raise unexpected_status(response)


def unexpected_status(response: httpx.Response) -> TransientError:
    """For a non-2xx status no rule covers (3xx, 404, ...) and no body that explains it.

    Transient, not a task error: a wrong base URL or a proxy in the way would otherwise fail
    every task of the instance at once.
    """
    status = response.status_code
    return TransientError(f"unexpected HTTP {status}", code=f"http_{status}", raw=excerpt(response))


def malformed(message: str, raw: dict[str, Any]) -> TransientError:
    return TransientError(message, code="malformed_response", raw=cap_raw(raw))


def is_http_url(value: str) -> bool:
    """Result URLs go to webhook consumers, so only absolute http(s) URLs pass through."""
    if len(value) > MAX_URL_CHARS:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def clip(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def url_expires_at(url: str, received_at: datetime, lifetime: timedelta) -> datetime:
    """When a result URL stops working: the earlier of `lifetime` after pollhook got it
    and the expiry the URL carries itself, an OSS `Expires=<unix seconds>` or AWS SigV4
    `X-Amz-Date` + `X-Amz-Expires` (the signed object-store links providers hand out)."""
    candidates = [received_at + lifetime]
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    expires = query.get("expires", "")
    # An expiry past what a datetime holds says nothing usable: the lifetime stands.
    with contextlib.suppress(ValueError, OverflowError, OSError):
        if expires.isascii() and expires.isdigit() and len(expires) <= 12:
            candidates.append(datetime.fromtimestamp(int(expires), UTC))
    amz_date, amz_expires = query.get("x-amz-date", ""), query.get("x-amz-expires", "")
    with contextlib.suppress(ValueError, OverflowError):
        if amz_expires.isascii() and amz_expires.isdigit() and len(amz_expires) <= 9:
            signed = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            candidates.append(signed + timedelta(seconds=int(amz_expires)))
    return min(candidates).astimezone(UTC).replace(microsecond=0)
