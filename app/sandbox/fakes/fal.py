"""fal's queue: a request's status and its result, routed by the model's owner and app.

Sandbox ids are pollhook's external ids, `<owner>/<app>/<request_id>` (`ID_FORMATS`). The
status answers HTTP 202 with IN_QUEUE (and `queue_position`) for the first third of the
script's duration and IN_PROGRESS after, then 200 with COMPLETED. How the request ended
shows in COMPLETED's `error`/`error_type` (outcome `failed`; `error_code` picks the
type by its HTTP status, 499 `client_cancelled` for a cancelled request) or in the result, which
answers the model's own error (outcome `error`: HTTP `error_code`, 422 by default, with a
validation `detail` list) or its output: `{"audio": File}`, the File on
`/_sandbox/files/fal/<owner>~<app>~<request_id>.mp3`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Answers, Clock, Json, base_url, gate
from app.sandbox.media import GeneratedFile, mp3_file
from app.sandbox.state import Instant, Provider, Sandbox, Task, key_problem

# A failed request's `error_type` by the script's error_code, the HTTP status fal's docs give
# each (504 when none is given); the script's error_message is its `error`. 499
# `client_cancelled` is a cancelled request.
FAILED_ERROR_TYPES: dict[int, str] = {
    504: "request_timeout",
    503: "runner_scheduling_failure",
    502: "runner_incomplete_response",
    500: "runner_server_error",
    499: "client_cancelled",
    400: "bad_request",
}
FAILED_STATUS = 504
FAILED_ERROR_TYPE = FAILED_ERROR_TYPES[FAILED_STATUS]
# The HTTP status the result of an `error` outcome answers when the script's error_code is
# not one: the model's validation error.
VALIDATION_STATUS = 422
_FILE_SEPARATOR = "~"


def _rate_limited() -> Response:
    # fal documents no polling limit and queues rather than rejects; its clients retry 429.
    return JSONResponse({"detail": "Too many requests"}, status_code=429)


ANSWERS = Answers(
    provider="fal",
    rate_limited=_rate_limited,
    malformed_json='{"status": "IN_PROGRESS", "response_url": "https://queue.fal.run/fal-ai/',
    wrong_types=(
        {"status": 3, "queue_position": "1"},
        {"status": ["COMPLETED"], "response_url": 7},
        {"status": None, "logs": "none"},
    ),
)


def fal_key(header: str | None) -> str | None:
    """The key in `Authorization: Key <key>`, or None when the header is absent or malformed."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "key" or not key:
        return None
    return key


def fal_error(status: int, detail: Any, error_type: str | None = None) -> Response:
    body: Json = {"detail": detail}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status, headers=headers)


def status_body(task: Task, wall: float, base: str) -> Json:
    owner, app, request_id = task.id.split("/")
    requests = f"{base}/{owner}/{app}/requests/{request_id}"
    phase = task.phase(wall)
    body: Json = {"status": task.status(wall)}
    if phase == "queued":
        # One request ahead per second of queueing left.
        queued_until = task.created_at + task.duration_s / 3
        body["queue_position"] = max(0, math.ceil(queued_until - wall) - 1)
    body.update(
        {
            "response_url": requests,
            "status_url": f"{requests}/status",
            "cancel_url": f"{requests}/cancel",
            "logs": None,
        }
    )
    if phase == "done":
        body["metrics"] = {"inference_time": round(task.duration_s * 2 / 3, 3)}
        if task.outcome == "failed":
            body["error"] = task.error_message
            body["error_type"] = FAILED_ERROR_TYPES[failed_status(task)]
    return body


def failed_status(task: Task) -> int:
    return task.error_code if task.error_code in FAILED_ERROR_TYPES else FAILED_STATUS


def result_answer(task: Task, wall: float, base: str) -> Response:
    if task.phase(wall) != "done":
        return fal_error(400, "Request is still in progress")
    if task.outcome == "failed":
        status = failed_status(task)
        return fal_error(status, task.error_message, FAILED_ERROR_TYPES[status])
    if task.outcome == "error":
        code = task.error_code if task.error_code and 400 <= task.error_code <= 599 else 0
        detail = [{"loc": ["body", "prompt"], "msg": task.error_message, "type": "missing"}]
        return fal_error(code or VALIDATION_STATUS, detail)
    name = _FILE_SEPARATOR.join(task.id.split("/")) + ".mp3"
    url = f"{base}/_sandbox/files/fal/{name}?expires={task.url_expiry(task.ready_at)}"
    audio = {
        "url": url,
        "content_type": "audio/mpeg",
        "file_name": "output.mp3",
        "file_size": task.result_bytes,
    }
    return JSONResponse({"audio": audio})


class FalFake:
    provider: Provider = "fal"
    answers: Answers = ANSWERS
    # fal signs its webhooks with ED25519 (JWKS), not Standard Webhooks: the sandbox sends
    # them unsigned, as pollhook takes them (the token in the URL).
    signs_callbacks: bool = False
    calls_back: bool = True

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        """fal's webhook: the request_id alone (not the model), `OK` with the result as
        `payload`, or `ERROR` with the error (fal's webhooks page)."""
        request_id = task.id.split("/")[-1]
        body: Json = {"request_id": request_id, "gateway_request_id": request_id}
        if task.outcome == "success":
            answer = result_answer(task, task.ready_at, base_url)
            return body | {"status": "OK", "payload": json.loads(bytes(answer.body))}
        return body | {"status": "ERROR", "error": task.error_message, "payload": None}

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["fal"])

        async def admit(request: Request, at: Instant) -> Response | None:
            key = fal_key(request.headers.get("authorization"))
            early = await gate(sandbox, ANSWERS, key, at)
            if early is not None:
                return early
            if key_problem(key) is not None:
                return fal_error(401, "Invalid authentication credentials")
            return None

        def find(owner: str, app: str, request_id: str) -> Task | None:
            return sandbox.tasks.get("fal", f"{owner}/{app}/{request_id}")

        @router.get("/{owner}/{app}/requests/{request_id}/status")
        async def status(owner: str, app: str, request_id: str, request: Request) -> Response:
            at = clock()
            if (early := await admit(request, at)) is not None:
                return early
            task = find(owner, app, request_id)
            if task is None:
                return fal_error(404, "Request not found")
            sandbox.observe(task, at)
            body = status_body(task, at.wall, base_url(request))
            return JSONResponse(body, status_code=200 if body["status"] == "COMPLETED" else 202)

        @router.get("/{owner}/{app}/requests/{request_id}")
        async def result(owner: str, app: str, request_id: str, request: Request) -> Response:
            at = clock()
            if (early := await admit(request, at)) is not None:
                return early
            task = find(owner, app, request_id)
            if task is None:
                return fal_error(404, "Request not found")
            task.retrieves += 1
            return result_answer(task, at.wall, base_url(request))

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        stem, dot, suffix = name.rpartition(".")
        parts = stem.split(_FILE_SEPARATOR)
        if not dot or suffix != "mp3" or len(parts) != 3:
            return None
        task = sandbox.tasks.get("fal", "/".join(parts))
        if task is None or task.outcome != "success":
            return None
        return task, mp3_file(task.id, task.result_bytes)


FAKE = FalFake()
