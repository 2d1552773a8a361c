"""Pure ASGI middleware: the request body's bounds and one log line per request."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.error_handlers import service_error_response
from app.core.errors import PayloadTooLarge, RequestTimeout, ServiceError
from app.core.json_body import parse_json_body
from app.core.logging import get_logger
from app.core.metrics import HTTP_REQUESTS, HTTP_SECONDS, UNMATCHED_ROUTE
from app.core.routes import RouteIndex

log = get_logger("pollhook.access")

# HTTP allows any token as a method: metrics label the rest "OTHER" to stay bounded.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyLimitMiddleware:
    """Reads the whole request body before the app sees it, within three bounds:

    - at most `max_bytes` (or the path's own limit), with or without Content-Length: an
      oversized chunked upload is cut off as soon as it crosses the limit (413);
    - within `timeout_s` of the headers: a client that sends half a body, or a chunked body
      that never ends, would otherwise hold the connection and its request task forever (408);
    - a JSON body must pass `parse_json_body`, the one strict parser (422), for every route
      present and future. It runs before routing and authentication, as the framework's own
      JSON decoding does, so such a body is a 422 whatever the path or key.

    413 and 408 close the connection: the rest of the body may still be on its way. A 422 has
    read the whole body, so the connection stays open for the next request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_s: float,
        max_bytes_by_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        # Routes whose bodies are larger by design (a batch), by exact path.
        self.max_bytes_by_path = dict(max_bytes_by_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        max_bytes = self.max_bytes_by_path.get(scope["path"], self.max_bytes)
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0  # the server refuses a malformed Content-Length before this
        try:
            if declared > max_bytes:
                raise _too_large(max_bytes)
            async with asyncio.timeout(self.timeout_s):
                buffered = await _read(receive, max_bytes)
        except TimeoutError:
            timed_out = RequestTimeout(
                f"the request body did not arrive within {self.timeout_s:g} s"
            )
            await _send_error(scope, receive, send, timed_out, close=True)
            return
        except PayloadTooLarge as exc:
            await _send_error(scope, receive, send, exc, close=True)
            return
        body = b"".join(m.get("body", b"") for m in buffered)
        if body and _is_json(headers.get(b"content-type", b"")):
            try:
                parse_json_body(body)
            except ServiceError as exc:
                await _send_error(scope, receive, send, exc, close=False)
                return

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds {max_bytes} bytes")


async def _read(receive: Receive, max_bytes: int) -> list[Message]:
    """The body's messages, up to the last one (or a disconnect)."""
    buffered: list[Message] = []
    size = 0
    while True:
        message = await receive()
        buffered.append(message)
        if message["type"] != "http.request":
            return buffered
        size += len(message.get("body", b""))
        if size > max_bytes:
            raise _too_large(max_bytes)
        if not message.get("more_body", False):
            return buffered


def _is_json(content_type: bytes) -> bool:
    """The media types the framework decodes as JSON: application/json and application/*+json."""
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


async def _send_error(
    scope: Scope, receive: Receive, send: Send, exc: ServiceError, *, close: bool
) -> None:
    response = service_error_response(exc)
    if close:
        response.headers["connection"] = "close"
    await response(scope, receive, send)


class RequestLogMiddleware:
    """One structured line per request: method, path, status, duration, request id, tenant;
    and the request metrics by route template (bounded labels, unlike raw paths).

    Never the query string or headers, which is where credentials would travel.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        started = time.perf_counter()
        status_code = 500
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            state = scope.get("state") or {}
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status_code,
                duration_ms=round(elapsed * 1000, 2),
                tenant=state.get("tenant"),
            )
            index = getattr(getattr(scope.get("app"), "state", None), "routes", None)
            matched = index.match(scope["path"]) if isinstance(index, RouteIndex) else None
            route = matched.template if matched is not None else UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            HTTP_REQUESTS.labels(method, route, str(status_code)).inc()
            HTTP_SECONDS.labels(method, route).observe(elapsed)
            structlog.contextvars.unbind_contextvars("request_id")
