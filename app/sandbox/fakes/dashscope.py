"""Fake Alibaba DashScope async task query (`GET /api/v1/tasks/{task_id}`), with the
transcripts its file transcription tasks link to.

Answers follow DashScope's documented shapes (docs/providers.md): `{request_id, output,
usage}`, and a refusal `{request_id, code, message}` with its HTTP status. A task queues
(PENDING) for the first third of its duration, then runs (RUNNING); then it SUCCEEDED
with one subtask per scripted file (the first `failed_files` of them FAILED with
`error_name`, the rest with a transcript), FAILED with `output.code`/`message`, was
CANCELED, or is UNKNOWN (`expired`: its data deleted). An `error` outcome answers the
scripted HTTP status (`error_code`) with `error_name`. DashScope reports no queue
position or ETA, so neither does the fake.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Answers, Clock, Json, base_url, gate
from app.sandbox.media import GeneratedFile, Mp3Layout, cues
from app.sandbox.state import (
    Instant,
    KeyProblem,
    Provider,
    Sandbox,
    Task,
    bearer_key,
    key_problem,
)

QUERY_PATH = "/api/v1/tasks/{task_id}"
# A transcript's name under /_sandbox/files/dashscope/: `<task id>-<file number>.json`,
# as DashScope's own transcription URLs end.
_TRANSCRIPT = re.compile(r"(?P<task>[0-9a-f-]{36})-(?P<number>[1-9][0-9]{0,2})\.json")
# DashScope writes its times in China Standard Time, without a zone.
_CST = timedelta(hours=8)


def _request_id() -> str:
    return str(uuid.uuid4())


def refusal(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"request_id": _request_id(), "code": code, "message": message}, status_code=status
    )


def _rate_limited() -> Response:
    # DashScope documents no Retry-After: none is sent.
    return refusal(
        429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
    )


ANSWERS = Answers(
    provider="dashscope",
    rate_limited=_rate_limited,
    malformed_json='{"request_id": "7574ee8f", "output": {"task_id": "a8532587-0c46", "task_st',
    wrong_types=(
        {"request_id": "7574ee8f", "output": [{"task_status": "SUCCEEDED"}]},
        {"request_id": "7574ee8f", "output": {"task_id": 7, "task_status": 2}},
        {
            "request_id": "7574ee8f",
            "output": {"task_status": "SUCCEEDED", "results": {"transcription_url": 1}},
        },
    ),
)


def key_refusal(problem: KeyProblem) -> Response:
    if problem == "missing":
        return refusal(401, "InvalidApiKey", "No API-key provided.")
    return refusal(401, "InvalidApiKey", "Invalid API-key provided.")


def _time(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, UTC) + _CST
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03}"


def query_answer(task: Task, wall: float, base: str) -> Response:
    status = task.status(wall)
    if status is None:
        return refusal(
            task.error_code or 400, task.error_name or "InvalidParameter", task.error_message or ""
        )
    output: Json = {"task_id": task.id, "task_status": status}
    if status == "UNKNOWN":
        return JSONResponse({"request_id": _request_id(), "output": output})
    output["submit_time"] = _time(task.created_at)
    if task.phase(wall) != "queued":
        output["scheduled_time"] = _time(task.created_at + task.duration_s / 3)
    usage: Json | None = None
    if task.phase(wall) == "done":
        output["end_time"] = _time(task.ready_at)
    if status == "SUCCEEDED" and not task.incomplete:
        output["results"] = [_subtask(task, n, base) for n in range(1, task.files + 1)]
        succeeded = task.files - task.failed_files
        output["task_metrics"] = {
            "TOTAL": task.files,
            "SUCCEEDED": succeeded,
            "FAILED": task.failed_files,
        }
        usage = {
            "duration": succeeded * max(Mp3Layout.of(task.result_bytes).duration_ms // 1000, 1)
        }
    elif status == "FAILED":
        output["code"] = task.error_name
        output["message"] = task.error_message
    elif status in ("PENDING", "RUNNING"):
        output["task_metrics"] = {"TOTAL": task.files, "SUCCEEDED": 0, "FAILED": 0}
    return JSONResponse({"request_id": _request_id(), "output": output, "usage": usage})


def _subtask(task: Task, number: int, base: str) -> Json:
    # The input file: the client's own URL in real life, never fetched by pollhook.
    item: Json = {"file_url": f"{base}/_sandbox/inputs/{task.id}-{number}.mp3"}
    if number <= task.failed_files:
        item["code"] = task.error_name
        item["message"] = task.error_message or "The audio file cannot be downloaded."
        item["subtask_status"] = "FAILED"
        return item
    expires = task.url_expiry(task.ready_at)
    item["transcription_url"] = (
        f"{base}/_sandbox/files/dashscope/{task.id}-{number}.json?expires={expires}"
    )
    item["subtask_status"] = "SUCCEEDED"
    return item


def transcript(task: Task, number: int) -> GeneratedFile:
    """A Paraformer transcript of the task's `number`-th file, timed to an audio of
    `result_bytes` as the sandbox's MP3s are."""
    duration_ms = Mp3Layout.of(task.result_bytes).duration_ms
    spoken = cues(f"dashscope:{task.id}:{number}", duration_ms)
    sentences = [
        {"begin_time": c.start_ms, "end_time": c.end_ms, "text": c.text, "sentence_id": i}
        for i, c in enumerate(spoken, start=1)
    ]
    body: dict[str, Any] = {
        "file_url": f"/_sandbox/inputs/{task.id}-{number}.mp3",
        "properties": {
            "audio_format": "mp3",
            "channels": [0],
            "original_sampling_rate": 44100,
            "original_duration_in_milliseconds": duration_ms,
        },
        "transcripts": [
            {
                "channel_id": 0,
                "content_duration_in_milliseconds": duration_ms,
                "text": " ".join(c.text for c in spoken),
                "sentences": sentences,
            }
        ],
    }
    data = json.dumps(body, ensure_ascii=False).encode()
    return GeneratedFile(len(data), "application/json", lambda: iter((data,)))


class DashscopeFake:
    provider: Provider = "dashscope"
    answers: Answers = ANSWERS
    # EventBridge posts DashScope's AsyncTaskFinish event as it is: unsigned.
    signs_callbacks: bool = False
    calls_back: bool = True

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        """The CloudEvents event EventBridge's HTTP target posts when the task ends (the
        async-task-api page): it names the task and its status, never the result."""
        status = task.status(task.ready_at)
        if status is None:
            return None
        return {
            "specversion": "1.0",
            "id": _request_id(),
            "source": "acs.dashscope",
            "type": "dashscope:System:AsyncTaskFinish",
            "time": _time(task.ready_at),
            "datacontenttype": "application/json",
            "data": {
                "task_id": task.id,
                "task_status": status,
                "start_time": _time(task.created_at),
                "end_time": _time(task.ready_at),
                "request_id": _request_id(),
                "contain_result": False,
            },
        }

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["Alibaba DashScope"])

        @router.get(QUERY_PATH)
        async def query(task_id: str, request: Request) -> Response:
            at: Instant = clock()
            key = bearer_key(request.headers.get("authorization"))
            if (early := await gate(sandbox, ANSWERS, key, at)) is not None:
                return early
            problem = key_problem(key)
            if problem is not None:
                return key_refusal(problem)
            task = sandbox.tasks.get("dashscope", task_id)
            if task is None:
                # DashScope's answer for a task it does not have, whatever the id looks like.
                unknown = {"task_id": task_id, "task_status": "UNKNOWN"}
                return JSONResponse({"request_id": _request_id(), "output": unknown})
            sandbox.observe(task, at)
            return query_answer(task, at.wall, base_url(request))

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        match = _TRANSCRIPT.fullmatch(name)
        if match is None:
            return None
        task = sandbox.tasks.get("dashscope", match["task"])
        number = int(match["number"])
        if task is None or not task.failed_files < number <= task.files:
            return None
        return task, transcript(task, number)


FAKE = DashscopeFake()
