"""HTTP face of the sandbox: the providers' own query APIs plus the `/_sandbox` control API.

Provider routes answer like the providers (paths, envelopes, codes, HTTP statuses as their docs
and public clients describe them) and pass through one gate: count the request, apply the
rate limit, then maybe a fault. Control routes never see faults, limits or counts.

Every route is `async def`: the state is single-threaded by design, so nothing may run in
FastAPI's thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.core.docs import serve_docs_offline
from app.sandbox.callbacks import send_callbacks
from app.sandbox.fakes import FAKES
from app.sandbox.gate import Answers, Clock, Json, base_url, gate, system_clock
from app.sandbox.media import GeneratedFile, jimmy_audio, jimmy_subtitles, minimax_archive
from app.sandbox.minimax import minimax_error, minimax_rate_limited, minimax_refusal
from app.sandbox.schemas import (
    Cleared,
    ConfigRead,
    ConfigUpdate,
    FaultCreate,
    FaultCreated,
    FaultList,
    FaultRead,
    Health,
    StatsRead,
    TaskBatchCreate,
    TaskBatchCreated,
    TaskCreate,
    TaskCreated,
    TaskRead,
    TaskScript,
    public_id,
)
from app.sandbox.state import (
    DuplicateTask,
    Instant,
    Provider,
    Sandbox,
    SandboxConfig,
    SandboxError,
    Task,
    TooManyTasks,
    bearer_key,
    key_problem,
    parse_int64,
)

DESCRIPTION = """
Fakes of every provider pollhook speaks (MiniMax T2A async and video generation with File
Retrieve, Jimmy AI SoundClone, Replicate, fal, AssemblyAI, ElevenLabs dubbing, DashScope)
with scripted tasks, the providers' own rate-limit answers and injectable faults, the result
files behind their expiring URLs, and their callbacks to a task's `callback_url`. Point
pollhook's provider base URLs here. Control routes live under `/_sandbox` and need no key.
"""


def _jimmy_rate_limited() -> Response:
    # Jimmy, per its public clients, sends 429.
    return JSONResponse(
        {"code": -1, "msg": "rate limited", "data": None},
        status_code=429,
        headers={"Retry-After": "1"},
    )


MINIMAX_ANSWERS = Answers(
    provider="minimax",
    rate_limited=minimax_rate_limited,
    malformed_json='{"task_id": 95157322514444, "status": "Succ',
    wrong_types=(
        {"task_id": "95157322514444", "status": 2, "file_id": "x", "base_resp": "success"},
        {"task_id": 95157322514444, "status": 1, "base_resp": [0, "success"]},
        {"task_id": [], "status": ["Success"], "file_id": None, "base_resp": {"status_code": "0"}},
    ),
)
JIMMY_ANSWERS = Answers(
    provider="jimmy",
    rate_limited=_jimmy_rate_limited,
    malformed_json='{"code": 20000, "msg": "ok", "data": {"id": "audio_',
    wrong_types=(
        {"code": 20000, "msg": "ok", "data": [{"id": "audio_x", "status": "completed"}]},
        {"code": {"value": 20000}, "msg": "ok", "data": {"status": 3}},
        {"code": 20000, "msg": 0, "data": "completed"},
    ),
)


def create_sandbox_app(
    config: SandboxConfig | None = None, *, clock: Clock = system_clock
) -> FastAPI:
    """The sandbox server; `clock` is injectable so tests can move time without sleeping."""
    sandbox = Sandbox(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Posts the callbacks of tasks scripted with a callback_url, as their providers do.
        stop = asyncio.Event()
        shapes = {fake.provider: fake for fake in FAKES}
        sender = asyncio.create_task(send_callbacks(sandbox, shapes, clock, stop))
        try:
            yield
        finally:
            stop.set()
            await sender

    app = FastAPI(
        title="pollhook sandbox", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.sandbox = sandbox
    serve_docs_offline(app)
    app.include_router(_minimax_router(sandbox, clock))
    app.include_router(_jimmy_router(sandbox, clock))
    for fake in FAKES:
        app.include_router(fake.router(sandbox, clock))
    app.include_router(_control_router(sandbox, clock))
    app.add_exception_handler(SandboxError, _sandbox_error)
    app.add_middleware(_DropCutDownloads)
    return app


async def _sandbox_error(_: Request, exc: Exception) -> Response:
    status = 409 if isinstance(exc, DuplicateTask | TooManyTasks) else 422
    return JSONResponse({"detail": str(exc)}, status_code=status)


# ---------------------------------------------------------------------------------------------
# MiniMax


def minimax_query_body(task: Task, wall: float) -> Json:
    status = task.status(wall)
    if status is None:
        return {
            "task_id": int(task.id),
            "base_resp": {"status_code": task.error_code, "status_msg": task.error_message},
        }
    body: Json = {"task_id": int(task.id), "status": status, "file_id": task.file_id}
    if task.incomplete and task.outcome == "success":
        del body["file_id"]  # Success without file_id, as public clients have seen
    body["base_resp"] = {"status_code": 0, "status_msg": "success"}
    return body


def minimax_file_body(task: Task, file_id: int, base_url: str, wall: float) -> Json:
    """File Retrieve serves both MiniMax APIs' files: T2A's tar, the video's MP4 (served by
    its fake, app/sandbox/fakes/minimax_video.py)."""
    if task.provider == "minimax_video":
        path, filename, purpose = f"minimax_video/{file_id}.mp4", "output.mp4", "video_generation"
    else:
        path, filename, purpose = f"{file_id}.tar", f"{task.id}.tar", "t2a_async"
    url = f"{base_url}/_sandbox/files/{path}?expires={task.url_expiry(wall)}"
    return {
        "file": {
            "file_id": file_id,
            "bytes": 0,  # what MiniMax reports for async results; do not trust it
            "created_at": int(task.created_at),
            "filename": filename,
            "purpose": purpose,
            "backup_download_url" if task.backup_url_only else "download_url": url,
        },
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }


def _minimax_router(sandbox: Sandbox, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["MiniMax"])

    async def admit(request: Request, at: Instant) -> Response | None:
        key = bearer_key(request.headers.get("authorization"))
        early = await gate(sandbox, MINIMAX_ANSWERS, key, at)
        if early is not None:
            return early
        problem = key_problem(key)
        return None if problem is None else minimax_refusal(problem)

    @router.get("/v1/query/t2a_async_query_v2")
    async def query(request: Request) -> Response:
        at = clock()
        if (early := await admit(request, at)) is not None:
            return early
        task_id = parse_int64(request.query_params.get("task_id"))
        if task_id is None:
            return minimax_error(2013, "invalid params, task_id must be a positive integer")
        task = sandbox.tasks.get("minimax", str(task_id))
        if task is None:
            return minimax_error(2013, "invalid params, task not found", task_id=task_id)
        sandbox.observe(task, at)
        return JSONResponse(minimax_query_body(task, at.wall))

    @router.get("/v1/files/retrieve")
    async def retrieve(request: Request) -> Response:
        at = clock()
        if (early := await admit(request, at)) is not None:
            return early
        file_id = parse_int64(request.query_params.get("file_id"))
        if file_id is None:
            return minimax_error(2013, "invalid params, file_id must be a positive integer")
        task = sandbox.tasks.by_file(file_id)
        # The file exists once the task succeeded, and is gone once it expired.
        if task is None or task.status(at.wall) not in ("Success", "success"):
            return minimax_error(2013, "invalid file_id")
        task.retrieves += 1
        if task.retrieves <= task.file_not_ready_retrieves:
            return minimax_error(2013, "invalid params, file not found")  # not there yet
        return JSONResponse(minimax_file_body(task, file_id, base_url(request), at.wall))

    return router


# ---------------------------------------------------------------------------------------------
# Jimmy


def jimmy_envelope(code: int | str, msg: str, data: Json | None) -> Response:
    return JSONResponse({"code": code, "msg": msg, "data": data})


def jimmy_query_answer(task: Task, wall: float, base_url: str) -> Response:
    status = task.status(wall)
    if status is None:
        code = task.error_code if task.error_code is not None else -1
        return jimmy_envelope(
            str(code) if task.code_as_string else code, task.error_message or "error", None
        )
    ok: int | str = "20000" if task.code_as_string else 20000
    msg = "ok"
    if status == "failed" and task.message_in_msg:
        msg = task.error_message or msg
    return jimmy_envelope(ok, msg, jimmy_data(task, status, base_url))


def jimmy_data(task: Task, status: str, base_url: str) -> Json:
    data: Json = {
        "id": task.id,
        "object": "audio",
        "created": int(task.created_at),
        "model": "soundCloningClone" if task.model == "clone" else "soundCloningAudio",
        "status": status,
    }
    if status == "completed":
        if task.model == "clone":
            data["modelId"] = task.model_id
        # Incomplete: no audio, though a clone keeps its modelId (what "either field is
        # enough" took for success).
        if not task.incomplete:
            expires = f"?expires={task.url_expiry(task.ready_at)}"
            data["audioUrl"] = f"{base_url}/_sandbox/files/{task.id}.mp3{expires}"
            if jimmy_has_subtitles(task):
                data["subtitleFile"] = f"{base_url}/_sandbox/files/{task.id}.srt{expires}"
    failed = status == "failed" and not task.message_in_msg
    data["error"] = task.error_message if failed else None
    return data


def jimmy_has_subtitles(task: Task) -> bool:
    return task.model == "audio" and task.subtitles


def _jimmy_router(sandbox: Sandbox, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["Jimmy AI"])

    @router.get("/api/open-api/v1/audios/{task_id}")
    async def query(task_id: str, request: Request) -> Response:
        at = clock()
        key = bearer_key(request.headers.get("authorization"))
        if (early := await gate(sandbox, JIMMY_ANSWERS, key, at)) is not None:
            return early
        if key_problem(key) is not None:
            return jimmy_envelope(20001, "invalid api key", None)
        task = sandbox.tasks.get("jimmy", task_id)
        if task is None:
            return jimmy_envelope(20002, "task not found", None)
        sandbox.observe(task, at)
        return jimmy_query_answer(task, at.wall, base_url(request))

    return router


# ---------------------------------------------------------------------------------------------
# Control API


def _control_router(sandbox: Sandbox, clock: Clock) -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox control"])
    _task_routes(router, sandbox, clock)
    _fault_routes(router, sandbox, clock)
    _admin_routes(router, sandbox, clock)
    return router


def _task_routes(router: APIRouter, sandbox: Sandbox, clock: Clock) -> None:
    @router.post("/tasks", status_code=201, response_model_exclude_none=True)
    async def create_task(body: TaskCreate, request: Request) -> TaskCreated:
        sandbox.origin = base_url(request)
        _calls_back(body)
        (task,) = sandbox.create_tasks(body.to_spec(body.normalized_id()), clock())
        return TaskCreated(
            provider=task.provider, id=public_id(task), file_id=task.file_id, ready_at=task.ready_at
        )

    @router.post("/tasks/batch", status_code=201, response_model_exclude_none=True)
    async def create_batch(body: TaskBatchCreate, request: Request) -> TaskBatchCreated:
        sandbox.origin = base_url(request)
        _calls_back(body)
        at = clock()
        tasks = sandbox.create_tasks(body.to_spec(), at, body.count)
        minimax = body.provider == "minimax"
        return TaskBatchCreated(
            provider=body.provider,
            count=len(tasks),
            ids=[int(t.id) for t in tasks] if minimax else [t.id for t in tasks],
            file_ids=[t.file_id for t in tasks if t.file_id is not None] if minimax else None,
            ready_at=at.wall + body.duration_s,
        )

    # A path: fal's ids hold the model's owner and app.
    @router.get(
        "/tasks/{provider}/{task_id:path}", responses={404: {"description": "No such task"}}
    )
    async def read_task(provider: Provider, task_id: str) -> TaskRead:
        if provider == "minimax":
            number = parse_int64(task_id)
            task_id = str(number) if number is not None else task_id
        task = sandbox.tasks.get(provider, task_id)
        if task is None:
            raise HTTPException(404, f"no {provider} task {task_id}")
        return TaskRead.of(task, clock().wall)


def _calls_back(script: TaskScript) -> None:
    """A callback_url only for a provider whose fake posts callbacks (MiniMax's T2A and
    Jimmy call back on no URL)."""
    calling_back = {fake.provider for fake in FAKES if fake.calls_back}
    if script.callback_url is not None and script.provider not in calling_back:
        raise SandboxError(f"callback_url: {script.provider} calls back on no URL")


def _fault_routes(router: APIRouter, sandbox: Sandbox, clock: Clock) -> None:
    @router.post("/faults", status_code=201)
    async def add_fault(body: FaultCreate) -> FaultCreated:
        return FaultCreated(id=sandbox.faults.add(body.to_spec(), clock()).id)

    @router.get("/faults")
    async def list_faults() -> FaultList:
        return FaultList(faults=[FaultRead.of(f) for f in sandbox.faults.live(clock())])

    @router.delete("/faults")
    async def clear_faults() -> Cleared:
        cleared = len(sandbox.faults.live(clock()))
        sandbox.faults.clear()
        return Cleared(cleared=cleared)

    @router.delete("/faults/{fault_id}", status_code=204, responses={404: {}})
    async def remove_fault(fault_id: str) -> Response:
        if not sandbox.faults.remove(fault_id):
            raise HTTPException(404, f"no fault {fault_id}")
        return Response(status_code=204)


def _admin_routes(router: APIRouter, sandbox: Sandbox, clock: Clock) -> None:
    @router.get("/health")
    async def health() -> Health:
        return Health()

    @router.get("/stats")
    async def stats() -> StatsRead:
        return StatsRead.of(sandbox.traffic.stats(sandbox.rates))

    @router.post("/reset", status_code=204)
    async def reset() -> Response:
        sandbox.reset()
        return Response(status_code=204)

    @router.get("/config")
    async def read_config() -> ConfigRead:
        return _config(sandbox)

    @router.patch("/config")
    async def update_config(body: ConfigUpdate) -> ConfigRead:
        if body.minimax_rate is not None:
            sandbox.rates["minimax"] = body.minimax_rate
        if body.jimmy_rate is not None:
            sandbox.rates["jimmy"] = body.jimmy_rate
        sandbox.rates.update(body.rates or {})
        return _config(sandbox)

    @router.get("/files/{name}", response_class=Response, responses={403: {}, 404: {}, 503: {}})
    async def download(name: str, expires: str | None = None) -> Response:
        """Result files: MiniMax's tar behind its download URL, Jimmy's MP3 and SRT behind
        audioUrl and subtitleFile (`app.sandbox.media` makes them). 404 for a file no
        succeeded task has; 403, as a signed object-store URL answers, once `expires` has
        passed or when it is missing or not one the sandbox could have minted."""
        return _serve(result_file(sandbox, name, clock().wall), expires, clock().wall)

    @router.get(
        "/files/{provider}/{name}",
        response_class=Response,
        responses={403: {}, 404: {}, 503: {}},
    )
    async def download_of(provider: str, name: str, expires: str | None = None) -> Response:
        """Result files of the providers in `app.sandbox.fakes`, under the same rules."""
        wall = clock().wall
        fake = next((f for f in FAKES if f.provider == provider), None)
        found = fake.result_file(sandbox, name) if fake is not None else None
        if found is not None and not found[0].has_result(wall):
            found = None
        return _serve(found, expires, wall)


def _serve(found: tuple[Task, GeneratedFile] | None, expires: str | None, wall: float) -> Response:
    """A result file as an expiring object-store link serves it, faults included."""
    if found is None:
        return PlainTextResponse("The specified key does not exist.", status_code=404)
    task, file = found
    refusal = task.url_refusal(expires, wall)
    if refusal is not None:
        return PlainTextResponse(refusal, status_code=403)
    task.downloads += 1
    fault = task.download_fault()
    if fault == "unavailable":
        return PlainTextResponse(
            "Service Unavailable", status_code=503, headers={"Retry-After": "1"}
        )
    return StreamingResponse(
        _stream(file, file.size // 2 if fault == "cut" else None),
        media_type=file.content_type,
        headers={"Content-Length": str(file.size)},
    )


def result_file(sandbox: Sandbox, name: str, wall: float) -> tuple[Task, GeneratedFile] | None:
    """The task and file a `/_sandbox/files/{name}` URL names, if the file exists at `wall`."""
    stem, _, suffix = name.rpartition(".")
    task: Task | None = None
    if suffix == "tar" and (file_id := parse_int64(stem)) is not None:
        task = sandbox.tasks.by_file(file_id)
    elif suffix in ("mp3", "srt"):
        task = sandbox.tasks.get("jimmy", stem)
    if task is None or not task.has_result(wall):
        return None
    if task.provider == "minimax":
        return task, minimax_archive(task.id, task.result_bytes, int(task.ready_at))
    if suffix == "mp3":
        return task, jimmy_audio(task.id, task.result_bytes)
    if jimmy_has_subtitles(task):
        return task, jimmy_subtitles(task.id, task.result_bytes)
    return None


class CutDownload(Exception):
    """Raised mid-body to drop a download's connection, as a scripted fault."""


class _DropCutDownloads:
    """Ends a cut download quietly: the server closes a connection whose response never
    completed, and logs one line instead of the traceback an unhandled error gets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(CutDownload):
            await self.app(scope, receive, send)


async def _stream(file: GeneratedFile, cut_at: int | None) -> AsyncIterator[bytes]:
    """The file's chunks on the event loop: each is quick to make, and the state is not
    thread-safe, so nothing goes to the thread pool (which a plain iterator would). With
    `cut_at`, the bytes up to there, then the connection drops: the server, like any whose
    body ends short of its Content-Length, closes it."""
    sent = 0
    for chunk in file.chunks():
        if cut_at is not None and sent + len(chunk) >= cut_at:
            yield chunk[: cut_at - sent]
            raise CutDownload(f"cut after {cut_at} of {file.size} bytes, as scripted")
        sent += len(chunk)
        yield chunk


def _config(sandbox: Sandbox) -> ConfigRead:
    return ConfigRead(
        minimax_rate=sandbox.rates["minimax"],
        jimmy_rate=sandbox.rates["jimmy"],
        rates=dict(sandbox.rates),
        callback_secret=sandbox.config.callback_secret,
        seed=sandbox.config.seed,
        tasks=len(sandbox.tasks),
        max_tasks=sandbox.config.max_tasks,
    )
