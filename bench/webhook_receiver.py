"""A fast local webhook consumer for `bench.webhook_delivery`, run as its own process:

    python -m bench.webhook_receiver --port PORT [--sample-every 100]

Raw HTTP/1.1 on an asyncio protocol (uvloop), keep-alive, bound to 127.0.0.1 only. Every
request outside `/_control/` is answered `200 ok` as soon as its body has been read, and
recorded: `time.time()` at that moment, the `webhook-id`, the event type (read from the start
of the body), the `webhook-timestamp` and the body size. The headers and body of the first
few requests and of every `--sample-every`-th one are kept, for signature checks.

Control routes (for the benchmark, never recorded):
- `GET /_control/count`: `{"count": n, "connections": c}` (c: TCP connections accepted)
- `GET /_control/dump`: `{"records": [[arrival, id, type, timestamp, size], ...],
  "samples": [{"headers": {...}, "body": "..."}, ...], "connections": c}`
- `POST /_control/reset`: forget everything.

It runs in its own process so that it never shares an event loop (or a core's time slice
accounting) with the code under test. It does nothing per request beyond parsing, so it is
not the bottleneck of anything it measures; the benchmark reports its CPU time to show that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, cast

import uvloop

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024
FIRST_SAMPLES = 5
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]{1,100})"')

Record = tuple[float, str, str, str, int]


@dataclass
class Recorded:
    sample_every: int
    records: list[Record] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0  # TCP connections accepted since the last reset

    def add(self, arrival: float, headers: dict[str, str], body: bytes) -> None:
        match = _TYPE.search(body, 0, 200)
        self.records.append(
            (
                arrival,
                headers.get("webhook-id", ""),
                match.group(1).decode() if match else "",
                headers.get("webhook-timestamp", ""),
                len(body),
            )
        )
        index = len(self.records)
        if index <= FIRST_SAMPLES or index % self.sample_every == 0:
            self.samples.append({"headers": headers, "body": body.decode("utf-8", "replace")})

    def reset(self) -> None:
        self.records.clear()
        self.samples.clear()
        self.connections = 0


def _json_response(value: Any) -> bytes:
    body = json.dumps(value, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class Connection(asyncio.Protocol):
    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.recorded.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail()
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self._fail()
                return
            method, target = parts[0], parts[1]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail()  # httpx sends a content-length for byte bodies
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            arrival = time.time()
            if target.startswith("/_control/"):
                self.transport.write(self._control(method, target))
            else:
                self.recorded.add(arrival, headers, body)
                self.transport.write(OK)
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return

    def _control(self, method: str, target: str) -> bytes:
        recorded = self.recorded
        if target == "/_control/count":
            return _json_response(
                {"count": len(recorded.records), "connections": recorded.connections}
            )
        if target == "/_control/dump":
            return _json_response(
                {
                    "records": recorded.records,
                    "samples": recorded.samples,
                    "connections": recorded.connections,
                }
            )
        if target == "/_control/reset" and method == "POST":
            recorded.reset()
            return _json_response({"ok": True})
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, sample_every: int) -> None:
    recorded = Recorded(sample_every=sample_every)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(recorded), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sample-every", type=int, default=100)
    args = parser.parse_args()
    # SIGTERM's default action ends the process; nothing here needs cleaning up.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, max(1, args.sample_every)))


if __name__ == "__main__":
    main()
