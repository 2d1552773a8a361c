"""Pure ASGI middleware: body size limit and one log line per request."""

from __future__ import annotations

import json
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.error_handlers import error_body
from app.core.logging import get_logger
from app.core.metrics import HTTP_REQUESTS, HTTP_SECONDS, UNMATCHED_ROUTE
from app.core.routes import RouteIndex

log = get_logger("pollhook.access")

# HTTP allows any token as a method: metrics label the rest "OTHER" to stay bounded.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Reject bodies over `max_bytes` with 413, whether or not Content-Length is sent.

    The body is buffered (at most `max_bytes`) before the app sees it, so an oversized
    chunked upload is cut off as soon as it crosses the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = error_body("payload_too_large", f"request body exceeds {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await _send_json(send, 413, too_large)
                    return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _send_json(send, 413, too_large)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        await self.app(scope, replay, send)


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
