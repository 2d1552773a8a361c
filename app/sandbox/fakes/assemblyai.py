"""AssemblyAI's transcript query, as docs/providers.md ("AssemblyAI transcripts") describes it.

`GET /v2/transcript/{id}` with the raw key in `Authorization`. Errors are `{"error": ...}`
with an HTTP status: 401 for a refused key, 400 for an unknown id, 429 over the rate limit.
A transcript is `queued` for the first third of its duration (as when the account is over
its concurrency limit), then `processing`, then `completed` with its text and words, or
`error` with the reason in `error`. A scripted `expired` task answers as a transcript
deleted upstream does; a scripted `error` answers the script's HTTP status and message.

The transcript's words are the sentences `app.sandbox.media.cues` draws for its audio, the
MP3 its `audio_url` names under `/_sandbox/files/assemblyai/`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.sandbox.gate import Answers, Clock, Json, base_url, gate
from app.sandbox.media import GeneratedFile, Mp3Layout, cues, mp3_file
from app.sandbox.state import Provider, Sandbox, Task, key_problem

AUTH_ERROR = "Authentication error, API token missing/invalid"
NOT_FOUND = "Transcript lookup error, transcript id not found"
DELETED_TEXT = "Deleted by user."
DELETED_URL = "http://deleted_by_user"
SPEECH_MODEL = "universal"
CONFIDENCE = 0.93


def _rate_limited() -> Response:
    return JSONResponse(
        {"error": "Too Many Requests"}, status_code=429, headers={"Retry-After": "1"}
    )


ANSWERS = Answers(
    provider="assemblyai",
    rate_limited=_rate_limited,
    malformed_json='{"id": "9ea68fd3-f953-42c1-9742-976c447fb463", "status": "compl',
    wrong_types=(
        {"id": "9ea68fd3-f953-42c1-9742-976c447fb463", "status": 2, "text": ["x"]},
        {"id": 9, "status": "completed", "text": "x"},
        {"id": ["9ea68fd3-f953-42c1-9742-976c447fb463"], "status": {"value": "completed"}},
    ),
)


def raw_key(header: str | None) -> str | None:
    """AssemblyAI's key is the whole `Authorization` header, without a scheme."""
    key = (header or "").strip()
    return key or None


def error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def audio(task: Task) -> GeneratedFile:
    """The media the transcript was made from (the task's audio)."""
    return mp3_file(f"assemblyai:{task.id}", task.result_bytes)


def words(task: Task) -> list[Json]:
    """The transcript's words, each sentence's spread evenly over its time."""
    result: list[Json] = []
    for cue in cues(f"assemblyai:{task.id}", Mp3Layout.of(task.result_bytes).duration_ms):
        texts = cue.text.split(" ")
        span = (cue.end_ms - cue.start_ms) // len(texts)
        for index, text in enumerate(texts):
            start = cue.start_ms + index * span
            result.append(
                {
                    "text": text,
                    "start": start,
                    "end": start + span,
                    "confidence": CONFIDENCE,
                    "speaker": None,
                }
            )
    return result


def transcript(task: Task, status: str, wall: float, base: str) -> Json:
    """The transcript resource as AssemblyAI answers it, with the fields it always has."""
    expires = task.url_expiry(task.ready_at)
    body: Json = {
        "id": task.id,
        "status": status,
        "audio_url": f"{base}/_sandbox/files/assemblyai/{task.id}.mp3?expires={expires}",
        "language_model": "assemblyai_default",
        "acoustic_model": "assemblyai_default",
        "speech_model": None,
        "language_code": None,
        "language_confidence_threshold": None,
        "language_confidence": None,
        "text": None,
        "words": None,
        "utterances": None,
        "confidence": None,
        "audio_duration": None,
        "punctuate": True,
        "format_text": True,
        "webhook_url": None,
        "webhook_status_code": None,
        "webhook_auth": False,
        "webhook_auth_header_name": None,
        "auto_highlights": False,
        "redact_pii": False,
        "summarization": False,
        "throttled": task.phase(wall) == "queued",
    }
    if status == "error":
        body["error"] = task.error_message
    elif status == "completed" and task.outcome == "expired":
        body.update(audio_url=DELETED_URL, webhook_url=DELETED_URL, text=DELETED_TEXT)
    elif status == "completed":
        seconds = Mp3Layout.of(task.result_bytes).duration_ms / 1000
        body.update(
            language_code="en_us",
            speech_model_used=SPEECH_MODEL,
            audio_duration=round(seconds),
        )
        if not task.incomplete:
            spoken = words(task)
            body.update(
                text=" ".join(word["text"] for word in spoken),
                words=spoken,
                confidence=CONFIDENCE,
            )
    return body


class AssemblyAIFake:
    provider: Provider = "assemblyai"
    answers: Answers = ANSWERS
    # AssemblyAI posts `{transcript_id, status}` to the webhook_url, unsigned (its only
    # proof is a header the submitter names).
    signs_callbacks: bool = False
    calls_back: bool = True

    def callback_body(self, task: Task, base_url: str) -> Json | None:
        status = task.status(task.ready_at)
        if status is None:
            return None
        return {"transcript_id": task.id, "status": status}

    def router(self, sandbox: Sandbox, clock: Clock) -> APIRouter:
        router = APIRouter(tags=["AssemblyAI"])

        @router.get("/v2/transcript/{transcript_id}")
        async def query(transcript_id: str, request: Request) -> Response:
            at = clock()
            key = raw_key(request.headers.get("authorization"))
            if (early := await gate(sandbox, ANSWERS, key, at)) is not None:
                return early
            if key_problem(key) is not None:
                return error(AUTH_ERROR, 401)
            task = sandbox.tasks.get("assemblyai", transcript_id)
            if task is None:
                return error(NOT_FOUND, 400)
            sandbox.observe(task, at)
            status = task.status(at.wall)
            if status is None:
                code = task.error_code or 400
                return error(task.error_message or NOT_FOUND, code if 400 <= code < 600 else 400)
            return JSONResponse(transcript(task, status, at.wall, base_url(request)))

        return router

    def result_file(self, sandbox: Sandbox, name: str) -> tuple[Task, GeneratedFile] | None:
        stem, _, suffix = name.rpartition(".")
        task = sandbox.tasks.get("assemblyai", stem) if suffix == "mp3" else None
        return None if task is None else (task, audio(task))
