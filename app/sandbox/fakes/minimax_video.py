"""MiniMax video generation's query route, and the MP4 behind its download URL.

The query answers as platform.minimax.io documents it (docs/providers.md, "MiniMax video
generation"): ids as strings, `Preparing`/`Queueing`/`Processing`/`Success`/`Fail`, and on
`Success` the `file_id` and the video's size. The `file_id` then goes through the MiniMax
fake's File Retrieve (app/sandbox/app.py), as at MiniMax: one host and one key serve both
APIs, so that retrieve is counted and rate-limited as a `minimax` request, and it hands out
`/_sandbox/files/minimax_video/<file_id>.mp4?expires=...`, which this fake serves.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Answers, Clock, Json, gate
from app.sandbox.media import CHUNK_BYTES, GeneratedFile
from app.sandbox.minimax import minimax_error, minimax_rate_limited, minimax_refusal
from app.sandbox.state import Provider, Sandbox, Task, bearer_key, key_problem, parse_int64

QUERY_PATH = "/v1/query/video_generation"
# The size of the docs' example answer (720P).
VIDEO_WIDTH = 1280
VIDEO_HEIGHT = 720
OK: Json = {"status_code": 0, "status_msg": "success"}

ANSWERS = Answers(
    provider="minimax_video",
    rate_limited=minimax_rate_limited,
    malformed_json='{"task_id": "106916112212032", "status": "Succ',
    wrong_types=(
        {"task_id": "106916112212032", "status": 4, "file_id": 7, "base_resp": "success"},
        {"task_id": ["106916112212032"], "status": "Success", "base_resp": [0, "success"]},
        {"task_id": None, "status": None, "file_id": [], "base_resp": {"status_code": "0"}},
    ),
)

# ---------------------------------------------------------------------------------------------
# The MP4


def _box(kind: bytes, payload_size: int) -> bytes:
    """An ISO BMFF box header (32-bit size, then the type) for `payload_size` bytes."""
    return struct.pack(">I", 8 + payload_size) + kind


# isom major brand, minor version 512, compatible with isom, iso2, mp41: what encoders write.
_FTYP_PAYLOAD = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
_FTYP = _box(b"ftyp", len(_FTYP_PAYLOAD)) + _FTYP_PAYLOAD
_HEAD_BYTES = len(_FTYP) + 8  # ftyp, then the mdat box's header


def mp4_file(seed: str, size: int) -> GeneratedFile:
    """`size` bytes of an MP4 container's top level: `ftyp`, then one `mdat` box whose
    bytes come from `seed`. It reads as MP4 to whatever checks a file's type, and differs
    from task to task; with no `moov` it is no playable video, which the sandbox has no
    encoder to make and no test needs."""
    if size < _HEAD_BYTES:
        raise ValueError(f"an MP4 here is at least {_HEAD_BYTES} bytes")

    def chunks() -> Iterator[bytes]:
        yield _FTYP + _box(b"mdat", size - _HEAD_BYTES)
        sent, index = _HEAD_BYTES, 0
        while sent < size:
            length = min(CHUNK_BYTES, size - sent)
            yield hashlib.shake_256(f"{seed}:{index}".encode()).digest(length)
            sent, index = sent + length, index + 1

    return GeneratedFile(size=size, content_type="video/mp4", chunks=chunks)


# ---------------------------------------------------------------------------------------------
# The query


def query_body(task: Task, wall: float) -> Json:
    """The query's answer for `task` at `wall`: file_id and size only once it succeeded
    (the docs: "returned when the task is successful")."""
    status = task.status(wall)
    if status is None:
        return {
            "task_id": task.id,
            "base_resp": {"status_code": task.error_code, "status_msg": task.error_message},
        }
    body: Json = {"task_id": task.id, "status": status}
    if status.lower() == "success" and not task.incomplete:
        body["file_id"] = str(task.file_id)
        body["video_width"] = VIDEO_WIDTH
        body["video_height"] = VIDEO_HEIGHT
    body["base_resp"] = OK
    return body


class MinimaxVideoFake:
    provider: Provider = "minimax_video"
    answers: Answers = ANSWERS
    # Unsigned; the body is the query's answer with the status in lowercase (the docs).
    signs_callbacks: bool = False
    calls_back: bool = True

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        body = query_body(task, task.ready_at)
        if isinstance(body.get("status"), str):
            body["status"] = body["status"].lower()
        return body

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["MiniMax video"])

        @router.get(QUERY_PATH)
        async def query(request: Request) -> Response:
            at = clock()
            key = bearer_key(request.headers.get("authorization"))
            if (early := await gate(sandbox, ANSWERS, key, at)) is not None:
                return early
            if (problem := key_problem(key)) is not None:
                return minimax_refusal(problem)
            task_id = request.query_params.get("task_id") or ""
            task = sandbox.tasks.get("minimax_video", task_id)
            if task is None:
                return minimax_error(2013, "invalid params, task not found", task_id=task_id)
            sandbox.observe(task, at)
            return JSONResponse(query_body(task, at.wall))

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        stem, _, suffix = name.rpartition(".")
        file_id = parse_int64(stem) if suffix == "mp4" else None
        task = sandbox.tasks.by_file(file_id) if file_id is not None else None
        if task is None or task.provider != "minimax_video":
            return None
        return task, mp4_file(task.id, task.result_bytes)
