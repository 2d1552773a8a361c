"""Replicate's prediction query, `GET /v1/predictions/{id}`, answered with the prediction
object, and errors as RFC 7807 problem details (docs/providers.md, "Replicate predictions").

A task says `starting` for the first third of its duration (an aborted one until its end),
then `processing`, then how it ended: `succeeded` with its output (one file URL, or a list
of `result_list_length`), `failed` with `error`, `canceled`, or `aborted`. Replicate deletes
output and files an hour after the end (sooner if `url_ttl_s` says so): then a succeeded
prediction answers `data_removed: true` and `output: null`, and its files 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Answers, Clock, Json, base_url, gate
from app.sandbox.media import GeneratedFile, mp3_file
from app.sandbox.state import Provider, Sandbox, Task, key_problem

# Deleted an hour after the prediction ends, for predictions created through the API.
RETENTION_S = 3600
MODEL = "sandbox/text-to-speech"
VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
UNAUTHENTICATED = "You did not pass a valid authentication token"


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """Replicate's error answer: `{title, detail, status}`."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if status == 401:
        title = "Unauthenticated"
    body = {"title": title, "detail": detail, "status": status}
    return JSONResponse(body, status_code=status, headers=headers)


def _rate_limited() -> Response:
    # The documented body; the SDK waits for Retry-After.
    return JSONResponse(
        {"detail": "Request was throttled. Your rate limit resets in ~1s."},
        status_code=429,
        headers={"Retry-After": "1"},
    )


ANSWERS = Answers(
    provider="replicate",
    rate_limited=_rate_limited,
    malformed_json='{"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "succ',
    wrong_types=(
        {"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": 3, "output": None},
        {"id": ["gm3qorzdhgbfurvjtvhg6dckhu"], "status": ["succeeded"], "output": {}},
        {"status": "succeeded", "output": "https://replicate.delivery/x/out.mp3"},
    ),
)


def token(header: str | None) -> str | None:
    """The key in `Authorization: Bearer <token>`, or the legacy `Token <token>`."""
    scheme, _, key = (header or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() in ("bearer", "token") and key else None


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def output_expiry(task: Task) -> int:
    """When the task's output and files are deleted (each file URL's `expires=`)."""
    return int(task.ready_at + min(task.url_ttl_s, RETENTION_S))


def file_names(task: Task) -> list[str]:
    if task.result_list_length is None:
        return [f"{task.id}.mp3"]
    return [f"{task.id}-{n}.mp3" for n in range(task.result_list_length)]


def prediction(task: Task, status: str, wall: float, base: str) -> Json:
    """The prediction object as `GET /v1/predictions/{id}` shows it at `wall`."""
    # It leaves `starting` a third of the way through (Task.phase).
    started = None if status in ("starting", "aborted") else task.created_at + task.duration_s / 3
    done = task.phase(wall) == "done"
    body: Json = {
        "id": task.id,
        "model": MODEL,
        "version": VERSION,
        "input": {"text": "pollhook sandbox"},
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": None,
        "status": status,
        "created_at": _iso(task.created_at),
        "started_at": None if started is None else _iso(started),
        "completed_at": _iso(task.ready_at) if done else None,
        "source": "api",
        "urls": {
            "get": f"{base}/v1/predictions/{task.id}",
            "cancel": f"{base}/v1/predictions/{task.id}/cancel",
        },
        "metrics": {},
    }
    if done and started is not None:
        body["metrics"] = {
            "predict_time": round(task.ready_at - started, 6),
            "total_time": round(task.ready_at - task.created_at, 6),
        }
    if status == "failed":
        body["error"] = task.error_message
    if status != "succeeded":
        return body
    if wall > output_expiry(task):
        body.update(input={}, logs=None, data_removed=True)
    elif not task.incomplete:
        expires = output_expiry(task)
        urls = [f"{base}/_sandbox/files/replicate/{n}?expires={expires}" for n in file_names(task)]
        body["output"] = urls[0] if task.result_list_length is None else urls
    return body


class ReplicateFake:
    provider: Provider = "replicate"
    answers: Answers = ANSWERS
    # Replicate signs its webhooks per Standard Webhooks; the body is the prediction object
    # as GET would give it when the prediction ended (the `completed` event).
    signs_callbacks: bool = True
    calls_back: bool = True

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        status = task.status(task.ready_at)
        if status is None:
            return None  # a scripted error answer: no prediction to send
        return prediction(task, status, task.ready_at, base_url)

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["Replicate"])

        @router.get("/v1/predictions/{prediction_id}")
        async def query(prediction_id: str, request: Request) -> Response:
            at = clock()
            key = token(request.headers.get("authorization"))
            if (early := await gate(sandbox, ANSWERS, key, at)) is not None:
                return early
            if key_problem(key) is not None:
                return problem(401, UNAUTHENTICATED)
            task = sandbox.tasks.get("replicate", prediction_id)
            if task is None:
                return problem(404, "Not found.")
            sandbox.observe(task, at)
            status = task.status(at.wall)
            if status is None:
                code = task.error_code if task.error_code is not None else 404
                return problem(code, task.error_message or "error")
            return JSONResponse(prediction(task, status, at.wall, base_url(request)))

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        stem, _, suffix = name.rpartition(".")
        if suffix != "mp3":
            return None
        task = sandbox.tasks.get("replicate", stem)
        if task is None:
            task = sandbox.tasks.get("replicate", stem.rpartition("-")[0])
        if task is None or name not in file_names(task):
            return None
        return task, mp3_file(f"replicate:{stem}", task.result_bytes)
