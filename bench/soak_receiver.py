"""The chaos soak's webhook consumer (`bench.soak`), run as its own process:

    python -m bench.soak_receiver --port PORT [--seed N]

A Starlette app under uvicorn on 127.0.0.1. Every request outside `/_control/` is a webhook:
its signature is verified with the PyPI `standardwebhooks` library (the secret is the one
configured for the longest matching path prefix), it is recorded (arrival time, path,
`webhook-id`, event type, task id, status and sequence from the body, the answer given,
whether the signature verified), and answered according to the mode:

- `chaos`: at random, by the configured weights: `200`, `500`, a hang longer than pollhook's
  webhook timeout (then `200`, too late), or `429` with `Retry-After`; and the configured
  "gone" path answers `410 Gone` once it has seen `gone_after` requests (pollhook then
  disables that endpoint);
- `calm`: `200` at once (the gone path stays gone), so the system can drain.

Control routes (never recorded):
- `POST /_control/config` `{secrets?: {prefix: whsec_...}, mode?, weights?, hang_s?,
  retry_after_s?, gone_path?, gone_after?}` -> the configuration now;
- `GET /_control/dump` -> `{"records": [...], "gone_since": t | null}`;
- `GET /_control/health` -> `{"ok": true}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ANSWERS = ("ok", "error", "hang", "throttle")
DEFAULT_WEIGHTS = {"ok": 0.62, "error": 0.16, "hang": 0.07, "throttle": 0.15}


@dataclass
class ReceiverState:
    rng: random.Random
    secrets: dict[str, Webhook] = field(default_factory=dict)
    mode: str = "chaos"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    hang_s: float = 3.0
    retry_after_s: int = 1
    gone_path: str | None = None
    gone_after: int = 10
    gone_since: float | None = None
    seen: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def verifier(self, path: str) -> Webhook | None:
        best = max((p for p in self.secrets if path.startswith(p)), key=len, default=None)
        return None if best is None else self.secrets[best]

    def answer_for(self, path: str) -> str:
        count = self.seen[path] = self.seen.get(path, 0) + 1
        if path == self.gone_path and (self.gone_since is not None or count > self.gone_after):
            if self.gone_since is None:
                self.gone_since = time.time()
            return "gone"
        if self.mode != "chaos":
            return "ok"
        names = list(ANSWERS)
        return self.rng.choices(names, weights=[self.weights.get(n, 0.0) for n in names])[0]


_ANSWERS = {
    "ok": (200, b"ok"),
    "gone": (410, b"gone"),
    "error": (500, b"boom"),
    "throttle": (429, b"slow down"),
}


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


def create_app(state: ReceiverState) -> Starlette:
    async def webhook(request: Request) -> Response:
        arrival = time.time()
        body = await request.body()
        path = request.url.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        verifier = state.verifier(path)
        signed = False
        if verifier is not None:
            try:
                verifier.verify(body, headers, json_parse=False)
                signed = True
            except WebhookVerificationError:
                signed = False
        answer = state.answer_for(path)
        state.records.append(
            {
                "t": arrival,
                "path": path,
                "id": headers.get("webhook-id"),
                "answer": answer,
                "signed": signed,
                **_describe(body),
            }
        )
        if answer == "hang":
            await asyncio.sleep(state.hang_s)  # past pollhook's timeout: a failed attempt
            return Response(b"late", status_code=200)
        status, text = _ANSWERS[answer]
        retry_after = {"Retry-After": str(state.retry_after_s)} if status == 429 else None
        return Response(text, status_code=status, headers=retry_after)

    async def configure(request: Request) -> Response:
        body = await request.json()
        for prefix, secret in (body.get("secrets") or {}).items():
            state.secrets[str(prefix)] = Webhook(str(secret))
        if "mode" in body:
            state.mode = str(body["mode"])
        if "weights" in body:
            state.weights = {str(k): float(v) for k, v in body["weights"].items()}
        for name in ("hang_s", "retry_after_s", "gone_after"):
            if name in body:
                setattr(state, name, type(getattr(state, name))(body[name]))
        if "gone_path" in body:
            state.gone_path = body["gone_path"]
        return JSONResponse(
            {
                "mode": state.mode,
                "weights": state.weights,
                "hang_s": state.hang_s,
                "gone_path": state.gone_path,
                "gone_after": state.gone_after,
                "secrets": sorted(state.secrets),
            }
        )

    async def dump(_: Request) -> Response:
        return JSONResponse({"records": state.records, "gone_since": state.gone_since})

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_control/config", configure, methods=["POST"]),
            Route("/_control/dump", dump, methods=["GET"]),
            Route("/_control/health", health, methods=["GET"]),
            Route("/{path:path}", webhook, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    state = ReceiverState(rng=random.Random(args.seed))
    uvicorn.run(
        create_app(state),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
