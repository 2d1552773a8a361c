"""ElevenLabs dubbing as the sandbox fakes it: Get dubbing, and the dub's audio and subtitles.

Answers follow docs/providers.md ("ElevenLabs dubbing"): `xi-api-key`, errors as
`{"detail": {"status", "message"}}` with an HTTP status, 429 `too_many_concurrent_requests`
over the rate. A dub runs `queued` for the first third of its duration, then `dubbing`, then
ends `dubbed` (or `failed` with `error`); a scripted error answers its `error_code` as the
HTTP status. Every dub is from English into Spanish and French.

The files are behind the keyed API, as at ElevenLabs: `/v1/dubbing/{id}/audio/{language}`
(an MP3 of `result_bytes`, 425 until dubbed) and `/transcript/{language}?format_type=srt`.
The same audio is also at `/_sandbox/files/elevenlabs/{id}.{language}.mp3` under the
sandbox's expiring-URL rules, for tests that fetch it without a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.sandbox.gate import Answers, Clock, Json, gate
from app.sandbox.media import GeneratedFile, Mp3Layout, mp3_file, srt_text
from app.sandbox.state import Instant, Provider, Sandbox, Task, key_problem

SOURCE_LANGUAGE = "en"
TARGET_LANGUAGES = ("es", "fr")
# The `detail.status` of a scripted error's HTTP status; words ElevenLabs documents, and
# `error` for the others.
_ERROR_WORDS = {
    401: "invalid_api_key",
    404: "dubbing_not_found",
    429: "system_busy",
}


def error(http_status: int, word: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": word, "message": message}}, status_code=http_status)


def _rate_limited() -> Response:
    # No Retry-After: ElevenLabs documents none.
    return error(
        429,
        "too_many_concurrent_requests",
        "Too many concurrent requests for your subscription: queue them or upgrade.",
    )


ANSWERS = Answers(
    provider="elevenlabs",
    rate_limited=_rate_limited,
    malformed_json='{"dubbing_id": "21m00Tcm4TlvDq8ikWAM", "name": "sandbox", "status": "dub',
    wrong_types=(
        {"dubbing_id": "21m00Tcm4TlvDq8ikWAM", "status": 2, "target_languages": "es"},
        {"dubbing_id": ["21m00Tcm4TlvDq8ikWAM"], "status": ["dubbed"]},
        {"dubbing_id": "21m00Tcm4TlvDq8ikWAM", "status": "dubbed", "target_languages": [1]},
    ),
)


def query_answer(task: Task, wall: float) -> Response:
    """Get dubbing's answer for `task` at `wall`."""
    status = task.status(wall)
    if status is None:
        code = task.error_code if task.error_code is not None else 404
        message = task.error_message or "error"
        if code == 422:
            body: Json = {"detail": [{"loc": ["path", "dubbing_id"], "msg": message}]}
            return JSONResponse(body, status_code=422)
        return error(code, _ERROR_WORDS.get(code, "error"), message)
    done = status in ("dubbed", "failed")
    languages = [] if status == "dubbed" and task.incomplete else list(TARGET_LANGUAGES)
    return JSONResponse(
        {
            "dubbing_id": task.id,
            "name": f"sandbox dub {task.id}",
            "status": status,
            "source_language": SOURCE_LANGUAGE if done else None,
            "target_languages": languages,
            "editable": False,
            "created_at": datetime.fromtimestamp(task.created_at, UTC).isoformat(),
            "media_metadata": {
                "content_type": "audio/mpeg",
                "duration": Mp3Layout.of(task.result_bytes).duration_ms / 1000,
            },
            "error": task.error_message if status == "failed" else None,
        }
    )


def audio(task: Task, language: str) -> GeneratedFile:
    """The dub's MP3 in `language`: each task and language sounds different."""
    return mp3_file(f"elevenlabs:{task.id}:{language}", task.result_bytes)


def transcript(task: Task, language: str) -> bytes:
    """The dub's SRT in `language`, timed to its audio."""
    duration_ms = Mp3Layout.of(task.result_bytes).duration_ms
    return srt_text(f"elevenlabs:{task.id}:{language}", duration_ms)


async def admit(
    sandbox: Sandbox, clock: Clock, request: Request
) -> tuple[Response | None, Instant]:
    """The gate, then the key: what answers instead of the route, if anything."""
    at = clock()
    key = request.headers.get("xi-api-key") or None
    if (early := await gate(sandbox, ANSWERS, key, at)) is not None:
        return early, at
    if key_problem(key) is not None:
        return error(401, "invalid_api_key", "Invalid API key"), at
    return None, at


def finished(sandbox: Sandbox, task_id: str, language: str, wall: float) -> Task | Response:
    """The dubbed task whose `language` is asked for, or the refusal."""
    task = sandbox.tasks.get("elevenlabs", task_id)
    if task is None or task.status(wall) is None:
        return error(404, "dubbing_not_found", "Dubbing not found")
    if not task.has_result(wall):
        return error(425, "dubbing_not_ready", "Dubbing is not complete yet")
    if language not in TARGET_LANGUAGES:
        return error(404, "language_not_found", f"The dub has no {language}")
    return task


class ElevenLabsFake:
    provider: Provider = "elevenlabs"
    answers: Answers = ANSWERS
    # Dubbing completion is no ElevenLabs webhook event, and creation takes no URL.
    signs_callbacks: bool = False
    calls_back: bool = False

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        return None

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["ElevenLabs"])

        @router.get("/v1/dubbing/{dubbing_id}")
        async def get_dubbing(dubbing_id: str, request: Request) -> Response:
            early, at = await admit(sandbox, clock, request)
            if early is not None:
                return early
            task = sandbox.tasks.get("elevenlabs", dubbing_id)
            if task is None:
                return error(404, "dubbing_not_found", "Dubbing not found")
            sandbox.observe(task, at)
            return query_answer(task, at.wall)

        @router.get("/v1/dubbing/{dubbing_id}/audio/{language_code}")
        async def get_audio(dubbing_id: str, language_code: str, request: Request) -> Response:
            early, at = await admit(sandbox, clock, request)
            if early is not None:
                return early
            found = finished(sandbox, dubbing_id, language_code, at.wall)
            if isinstance(found, Response):
                return found
            file = audio(found, language_code)
            return StreamingResponse(
                _chunks(file),
                media_type=file.content_type,
                headers={"Content-Length": str(file.size)},
            )

        @router.get("/v1/dubbing/{dubbing_id}/transcript/{language_code}")
        async def get_transcript(
            dubbing_id: str, language_code: str, request: Request, format_type: str = "srt"
        ) -> Response:
            early, at = await admit(sandbox, clock, request)
            if early is not None:
                return early
            found = finished(sandbox, dubbing_id, language_code, at.wall)
            if isinstance(found, Response):
                return found
            if format_type != "srt":
                return error(422, "invalid_format", "The sandbox serves format_type=srt")
            return Response(transcript(found, language_code), media_type="text/plain")

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        # `{id}.{language}.mp3`; ids are letters and digits, languages have no dot.
        stem, _, suffix = name.rpartition(".")
        task_id, _, language = stem.rpartition(".")
        task = sandbox.tasks.get("elevenlabs", task_id)
        if suffix != "mp3" or task is None or language not in TARGET_LANGUAGES:
            return None
        return task, audio(task, language)


async def _chunks(file: GeneratedFile) -> AsyncIterator[bytes]:
    # On the event loop: the sandbox's state is not thread-safe (app/sandbox/app.py).
    for chunk in file.chunks():
        yield chunk
