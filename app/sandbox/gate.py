"""What every provider route of the sandbox shares: the gate a request passes first (count,
rate limit, fault), and the answers a provider gives when the gate stops it.

Each provider's answers differ only in their bodies (its rate-limit answer, its truncated
and mistyped JSON); the faults that are plain HTTP are the same for all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from app.sandbox.state import FaultKind, Instant, Provider, Sandbox

Clock = Callable[[], Instant]
Json = dict[str, Any]

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Answers:
    """A provider's own answers to a request the gate stops."""

    provider: Provider
    # Its answer over the rate limit (MiniMax 1002 with HTTP 200, others a 429).
    rate_limited: Callable[[], Response]
    # Its body cut off mid-way, as when a proxy drops the connection under load.
    malformed_json: str
    # Valid JSON with the fields' types wrong, one picked at random per injection.
    wrong_types: tuple[Json, ...]


def system_clock() -> Instant:
    return Instant(wall=time.time(), mono=time.monotonic())


async def gate(sandbox: Sandbox, answers: Answers, key: str | None, at: Instant) -> Response | None:
    """Count the request, rate-limit it, then inject a fault if one fires. Returns the answer
    that replaces the normal one, or None to answer normally (after any injected delay)."""
    admission = sandbox.admit(answers.provider, key, at)
    if admission.rate_limited:
        return answers.rate_limited()
    fault = admission.fault
    if fault is None:
        return None
    if fault.latency_s > 0:
        await asyncio.sleep(fault.latency_s)
    if fault.kind in ("latency", "timeout"):
        return None
    return fault_response(fault.kind, answers, sandbox)


def fault_response(kind: FaultKind, answers: Answers, sandbox: Sandbox) -> Response:
    if kind == "http_500":
        return PlainTextResponse("Internal Server Error", status_code=500)
    if kind == "http_503":
        return JSONResponse(
            {"error": "service temporarily unavailable"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    if kind == "html":
        return HTMLResponse(NGINX_502, status_code=502)
    if kind == "malformed_json":
        return Response(answers.malformed_json, media_type="application/json")
    if kind == "wrong_types":
        return JSONResponse(sandbox.choose(answers.wrong_types))
    return answers.rate_limited()


def base_url(request: Request) -> str:
    """This server as the client reached it (so URLs work behind Docker names too)."""
    return str(request.base_url).rstrip("/")
