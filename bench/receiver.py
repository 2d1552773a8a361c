"""The webhook consumer of the benchmarks and the soak, run as its own process:

    python -m bench.receiver --port PORT [--seed N]

Raw HTTP/1.1 on an asyncio protocol (uvloop), keep-alive, bound to 127.0.0.1 only. It does
nothing per request beyond parsing, verifying and recording, so it is not the bottleneck of
anything it measures (the benchmarks report its CPU time to show that), and it runs in its
own process so that it never shares an event loop with the code under test.

Every request outside `/_control/` is a webhook. It is recorded as it arrives: `time.time()`,
the path, the `webhook-id`, the event type, task id, status and sequence from the body, the
body's size, the answer given, and whether its signature verifies with the PyPI
`standardwebhooks` library against the secret configured for the longest matching path
prefix (None where no secret is configured). It is answered according to the mode:

- `calm` (the default): `200` at once;
- `chaos`: at random, by the configured weights: `200`, `500`, a hang of `hang_s` (longer
  than pollhook's webhook timeout; then `200`, too late), or `429` with `Retry-After`;

and in either mode the configured "gone" path answers `410 Gone` once it has seen
`gone_after` requests (pollhook then disables that endpoint).

Control routes (never recorded):
- `GET /_control/count`: `{"count": n, "connections": c}` (c: TCP connections accepted);
- `GET /_control/dump`: `{"records": [...], "connections": c, "gone_since": t | null}`;
- `POST /_control/reset`: forget the records and the connection count;
- `POST /_control/config` `{secrets?: {prefix: whsec_...}, mode?, weights?, hang_s?,
  retry_after_s?, gone_path?, gone_after?}`: the configuration now.

`Receiver` below starts it and speaks its control routes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

import uvloop
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench._support import ControlledServer, free_port

ANSWERS = ("ok", "error", "hang", "throttle")
DEFAULT_WEIGHTS = {"ok": 0.62, "error": 0.16, "hang": 0.07, "throttle": 0.15}
MAX_HEAD = 64 * 1024
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def _response(status: str, body: bytes, content_type: str = "text/plain", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _json_response(value: Any) -> bytes:
    return _response(
        "200 OK", json.dumps(value, separators=(",", ":")).encode(), "application/json"
    )


def _describe(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
        data = parsed.get("data") or {}
        return {
            "type": parsed.get("type"),
            "task": data.get("id"),
            "status": data.get("status"),
            "seq": data.get("sequence"),
        }
    except (ValueError, AttributeError):
        return {"type": None, "task": None, "status": None, "seq": None}


@dataclass
class State:
    rng: random.Random
    secrets: dict[str, Webhook] = field(default_factory=dict)
    mode: str = "calm"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    hang_s: float = 3.0
    retry_after_s: int = 1
    gone_path: str | None = None
    gone_after: int = 10
    gone_since: float | None = None
    seen: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    def signed(self, path: str, headers: dict[str, str], body: bytes) -> bool | None:
        prefix = max((p for p in self.secrets if path.startswith(p)), key=len, default=None)
        if prefix is None:
            return None
        try:
            self.secrets[prefix].verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    def answer_for(self, path: str) -> str:
        count = self.seen[path] = self.seen.get(path, 0) + 1
        if path == self.gone_path and (self.gone_since is not None or count > self.gone_after):
            if self.gone_since is None:
                self.gone_since = time.time()
            return "gone"
        if self.mode != "chaos":
            return "ok"
        return self.rng.choices(ANSWERS, weights=[self.weights.get(n, 0.0) for n in ANSWERS])[0]

    def webhook(self, arrival: float, path: str, headers: dict[str, str], body: bytes) -> str:
        answer = self.answer_for(path)
        self.records.append(
            {
                "t": arrival,
                "path": path,
                "id": headers.get("webhook-id"),
                "answer": answer,
                "signed": self.signed(path, headers, body),
                "size": len(body),
                **_describe(body),
            }
        )
        return answer

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        for prefix, secret in (body.get("secrets") or {}).items():
            self.secrets[str(prefix)] = Webhook(str(secret))
        if "mode" in body:
            self.mode = str(body["mode"])
        if "weights" in body:
            self.weights = {str(k): float(v) for k, v in body["weights"].items()}
        for name in ("hang_s", "retry_after_s", "gone_after"):
            if name in body:
                setattr(self, name, type(getattr(self, name))(body[name]))
        if "gone_path" in body:
            self.gone_path = body["gone_path"]
        return {
            "mode": self.mode,
            "weights": self.weights,
            "hang_s": self.hang_s,
            "gone_path": self.gone_path,
            "gone_after": self.gone_after,
            "secrets": sorted(self.secrets),
        }

    def control(self, method: str, path: str, body: bytes) -> bytes:
        if path == "/_control/count":
            return _json_response({"count": len(self.records), "connections": self.connections})
        if path == "/_control/dump":
            return _json_response(
                {
                    "records": self.records,
                    "connections": self.connections,
                    "gone_since": self.gone_since,
                }
            )
        if path == "/_control/reset" and method == "POST":
            self.records.clear()
            self.connections = 0
            return _json_response({"ok": True})
        if path == "/_control/config" and method == "POST":
            return _json_response(self.configure(json.loads(body or b"{}")))
        return NOT_FOUND


class Connection(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.state.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.fail()
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self.fail()
                return
            method, path = parts[0], parts[1].split("?", 1)[0]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.fail()  # httpx sends a content-length for byte bodies
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self.fail()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            arrival = time.time()
            if path.startswith("/_control/"):
                self.transport.write(self.state.control(method, path, body))
            else:
                self.answer(self.state.webhook(arrival, path, headers, body))
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return

    def answer(self, answer: str) -> None:
        assert self.transport is not None
        if answer == "ok":
            self.transport.write(_response("200 OK", b"ok"))
        elif answer == "gone":
            self.transport.write(_response("410 Gone", b"gone"))
        elif answer == "error":
            self.transport.write(_response("500 Internal Server Error", b"boom"))
        elif answer == "throttle":
            retry = f"retry-after: {self.state.retry_after_s}\r\n"
            self.transport.write(_response("429 Too Many Requests", b"slow down", extra=retry))
        else:  # hang: past pollhook's timeout, a failed attempt; the answer comes too late
            late = _response("200 OK", b"late")
            asyncio.get_running_loop().call_later(self.state.hang_s, self.write_late, late)

    def write_late(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, seed: int | None) -> None:
    state = State(rng=random.Random(seed))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(state), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


class Receiver(ControlledServer):
    """`python -m bench.receiver`, and a client for its control routes."""

    name = "receiver"
    health_path = "/_control/count"

    @classmethod
    async def start(cls, log: TextIO, *, seed: int | None = None) -> Receiver:
        port = free_port()
        args = ["--port", str(port)] + ([] if seed is None else ["--seed", str(seed)])
        return await cls.launch(port, "bench.receiver", *args, log=log)

    async def count(self) -> int:
        response = await self.http.get("/_control/count", timeout=5.0)
        response.raise_for_status()
        return int(response.json()["count"])

    async def reset(self) -> None:
        (await self.http.post("/_control/reset")).raise_for_status()

    async def configure(self, **config: Any) -> None:
        (await self.http.post("/_control/config", json=config)).raise_for_status()

    async def dump(self) -> dict[str, Any]:
        response = await self.http.get("/_control/dump")
        response.raise_for_status()
        dump: dict[str, Any] = response.json()
        return dump


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    # SIGTERM's default action ends the process; nothing here needs cleaning up.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.seed))


if __name__ == "__main__":
    main()
