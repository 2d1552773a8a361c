"""A real HTTP consumer on loopback (uvicorn in the test's loop) with scripted answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.helpers import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drip_s: float | None = None  # send the body one byte every drip_s seconds


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[Answer]] = {}
        self.port = free_port()
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.arrived = asyncio.Event()
        # Delayed answers being given at once, per path, and the most seen.
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, *answers: Answer) -> None:
        """Answer `path` with these, in order; the last one repeats."""
        self.script[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received(request.url.path, dict(request.headers), body))
        self.arrived.set()
        answers = self.script.get(request.url.path) or [Answer()]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer.delay_s:
            path = request.url.path
            self.active[path] += 1
            self.peak[path] = max(self.peak[path], self.active[path])
            try:
                await asyncio.sleep(answer.delay_s)
            finally:
                self.active[path] -= 1
        if answer.drip_s is not None:
            drip = answer.drip_s

            async def chunks() -> AsyncIterator[bytes]:
                for byte in answer.body:
                    yield bytes([byte])
                    await asyncio.sleep(drip)

            return StreamingResponse(chunks(), status_code=answer.status, headers=answer.headers)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)

    async def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])
        self.server, self.task = await start_server(app, self.port)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            await stop_server(self.server, self.task)


async def start_server(
    app: ASGIApp, port: int, **options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """`app` under a real uvicorn on 127.0.0.1:`port`, in the test's event loop; `options`
    go to uvicorn.Config."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        **options,
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    # uvicorn exposes readiness as a flag only, so poll it (bounded).
    for _ in range(500):
        if server.started:
            return server, task
        await asyncio.sleep(0.01)
    raise RuntimeError("the server did not start")


async def stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    server.force_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


class _InProcessServer(uvicorn.Server):
    """Leaves signal handling to the test runner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
