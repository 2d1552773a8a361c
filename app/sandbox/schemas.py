"""Request and response bodies of the sandbox control API (`/_sandbox/...`).

Unknown fields are refused so a typo in a test's script fails loudly instead of silently
running the default scenario.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from app.sandbox.fakes import fal
from app.sandbox.media import MIN_AUDIO_BYTES
from app.sandbox.state import (
    DEFAULT_RESULT_BYTES,
    DOWNLOAD_URL_TTL_S,
    MAX_LATENCY_S,
    MAX_RESULT_BYTES,
    MINIMAX_PROVIDERS,
    OUTCOME_OWNERS,
    Fault,
    FaultKind,
    FaultSpec,
    JimmyModel,
    KeyStats,
    MinimaxFailed,
    MinimaxQueued,
    Outcome,
    Phase,
    Provider,
    StatusCase,
    Task,
    TaskSpec,
    is_loopback_url,
    parse_int64,
)

MAX_DURATION_S = 30 * 24 * 3600.0
MAX_BATCH = 100_000
MAX_SCRIPTED_ANSWERS = 1000
MAX_RESULT_LIST = 16
# Jimmy ids travel in a URL path; keep them to characters that never need escaping.
_JIMMY_ID = re.compile(r"[A-Za-z0-9._~-]{1,256}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# DashScope's file transcription takes at most this many file URLs per task.
MAX_FILES = 100
# What a provider's error code names (DashScope's `InvalidFile.DownloadFailed`).
ERROR_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,99}$"
# AssemblyAI writes UUIDs (older ids: another first group), always in lowercase.
_ASSEMBLYAI_ID = re.compile(r"(?=.{1,64}$)[0-9a-z]+(?:-[0-9a-z]+)*")
# fal ids are pollhook's: the model's owner and app, then the request_id (a UUID).
_FAL_ID = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}/[A-Za-z0-9][A-Za-z0-9._-]{0,99}/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The script fields only some fakes act on, and which.
FIELD_OWNERS: dict[str, tuple[Provider, ...]] = {
    "queued_status": MINIMAX_PROVIDERS,
    "failed_status": MINIMAX_PROVIDERS,
    "file_not_ready_retrieves": MINIMAX_PROVIDERS,
    "backup_url_only": MINIMAX_PROVIDERS,
    "message_in_msg": ("jimmy",),
    "model": ("jimmy",),
    "subtitles": ("jimmy",),
    "error_name": ("dashscope",),
    "files": ("dashscope",),
    "failed_files": ("dashscope",),
    "result_list_length": ("replicate",),
}


class TaskScript(_Body):
    """How a task behaves: how long it runs and how it ends."""

    provider: Provider
    duration_s: float = Field(5.0, ge=0, le=MAX_DURATION_S)
    outcome: Outcome = "success"
    error_code: int | None = None
    error_message: str | None = Field(None, max_length=1000)
    model: JimmyModel = "audio"
    subtitles: bool = False
    status_case: StatusCase | None = None
    code_as_string: bool | None = None
    incomplete_queries: int = Field(
        0,
        ge=0,
        le=MAX_SCRIPTED_ANSWERS,
        description="The first this many status queries once done say so without the "
        "result: MiniMax Success without file_id, Jimmy completed without audioUrl "
        "and subtitleFile (a clone keeps its modelId).",
    )
    queued_status: MinimaxQueued | None = Field(
        None, description="MiniMax: report this status for the first third of the duration."
    )
    failed_status: MinimaxFailed | None = Field(
        None,
        description="MiniMax: the word for a failed task; by default the API's own (T2A "
        "Failed, video Fail).",
    )
    file_not_ready_retrieves: int = Field(
        0,
        ge=0,
        le=MAX_SCRIPTED_ANSWERS,
        description="MiniMax: File Retrieve answers 2013 for this many calls after Success.",
    )
    backup_url_only: bool = Field(
        False, description="MiniMax: File Retrieve gives backup_download_url, no download_url."
    )
    url_ttl_s: float = Field(
        DOWNLOAD_URL_TTL_S,
        gt=0,
        le=MAX_DURATION_S,
        description="The result URLs' own lifetime (their `expires=`; 9 h by default): "
        "MiniMax's download URL from each File Retrieve, Jimmy's audioUrl and subtitleFile "
        "from when the task finished. `/_sandbox/files/...` answers 403 after it.",
    )
    result_bytes: int = Field(
        DEFAULT_RESULT_BYTES,
        ge=MIN_AUDIO_BYTES,
        le=MAX_RESULT_BYTES,
        description="The length of the result's MP3 in bytes (a tone, 128 kbit/s; "
        "16384 is about one second). MiniMax's tar holds it with its timings and metadata; "
        "MiniMax video's MP4 is this long.",
    )
    failed_downloads: int = Field(
        0,
        ge=0,
        le=MAX_SCRIPTED_ANSWERS,
        description="The task's first this many result file downloads answer 503.",
    )
    cut_downloads: int = Field(
        0,
        ge=0,
        le=MAX_SCRIPTED_ANSWERS,
        description="The next this many are cut off halfway through the body (the "
        "connection closes short of Content-Length).",
    )
    message_in_msg: bool = Field(
        False,
        description="Jimmy: a failed task says error: null and gives error_message in the "
        "envelope's msg.",
    )
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="Providers that call back: where the sandbox posts, as the provider "
        "would, when the task ends (signed as the provider signs). Loopback addresses "
        "only (127.0.0.0/8, [::1], localhost).",
    )
    callback_delay_s: float = Field(
        0.0, ge=0, le=MAX_DURATION_S, description="How long after the task ends it posts."
    )
    callback_copies: int = Field(
        1,
        ge=1,
        le=MAX_SCRIPTED_ANSWERS,
        description="How many times it posts the same message (a retry, or a replay).",
    )

    @field_validator("callback_url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        # The sandbox posts only where a test or a benchmark listens: this machine.
        if value is not None and not is_loopback_url(value):
            raise ValueError("must be an http URL on a loopback address")
        return value

    result_list_length: int | None = Field(
        None,
        ge=0,
        le=MAX_RESULT_LIST,
        description="Replicate: the output is a list of this many file URLs; null (the "
        "default): one URL as a bare string.",
    )
    error_name: str | None = Field(
        None,
        pattern=ERROR_NAME_PATTERN,
        description="DashScope: the error code, a name (`output.code` of a failed task, "
        "`code` of an error answer); InvalidFile.DownloadFailed / InvalidParameter by "
        "default. `error_code` is then the error answer's HTTP status (400 by default).",
    )
    files: int = Field(
        1,
        ge=1,
        le=MAX_FILES,
        description="DashScope: the task's input files, one subtask each (`output.results`).",
    )
    failed_files: int = Field(
        0,
        ge=0,
        le=MAX_FILES,
        description="DashScope: how many of the files (the first ones) fail with "
        "`error_name` while the task still says SUCCEEDED; all of them is DashScope's "
        "SUCCEEDED task whose every subtask failed.",
    )

    @model_validator(mode="after")
    def _outcome_fits_provider(self) -> Self:
        owners = OUTCOME_OWNERS.get(self.outcome)
        if owners is not None and self.provider not in owners:
            raise ValueError(f"outcome '{self.outcome}' is not a {self.provider} task state")
        given = {
            "queued_status": self.queued_status is not None,
            "failed_status": self.failed_status is not None,
            "file_not_ready_retrieves": self.file_not_ready_retrieves > 0,
            "backup_url_only": self.backup_url_only,
            "message_in_msg": self.message_in_msg,
            "model": self.model != "audio",
            "subtitles": self.subtitles,
            "error_name": self.error_name is not None,
            "files": self.files != 1,
            "failed_files": self.failed_files > 0,
            "result_list_length": self.result_list_length is not None,
        }
        wrong = [
            name for name, set_ in given.items() if set_ and self.provider not in FIELD_OWNERS[name]
        ]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: not a {self.provider} behaviour")
        if self.failed_files > self.files:
            raise ValueError("failed_files must not exceed files")
        failed_codes = fal.FAILED_ERROR_TYPES
        fal_failed = self.provider == "fal" and self.outcome == "failed"
        if fal_failed and self.error_code is not None and self.error_code not in failed_codes:
            raise ValueError(
                "a failed fal request's error_code is the HTTP status of its error_type: "
                f"one of {', '.join(map(str, failed_codes))}"
            )
        code = self.error_code if self.outcome == "error" else None
        if self.provider == "replicate" and code is not None and not 400 <= code < 600:
            raise ValueError("a Replicate error_code is the HTTP status it answers (400-599)")
        return self

    def to_spec(self, task_id: str | None = None) -> TaskSpec:
        return TaskSpec(
            provider=self.provider,
            duration_s=self.duration_s,
            outcome=self.outcome,
            error_code=self.error_code,
            error_message=self.error_message,
            model=self.model,
            subtitles=self.subtitles,
            status_case=self.status_case,
            code_as_string=self.code_as_string,
            id=task_id,
            incomplete_queries=self.incomplete_queries,
            queued_status=self.queued_status,
            failed_status=self.failed_status,
            file_not_ready_retrieves=self.file_not_ready_retrieves,
            backup_url_only=self.backup_url_only,
            url_ttl_s=self.url_ttl_s,
            message_in_msg=self.message_in_msg,
            result_bytes=self.result_bytes,
            failed_downloads=self.failed_downloads,
            cut_downloads=self.cut_downloads,
            callback_url=self.callback_url,
            callback_delay_s=self.callback_delay_s,
            callback_copies=self.callback_copies,
            result_list_length=self.result_list_length,
            error_name=self.error_name,
            files=self.files,
            failed_files=self.failed_files,
        )


class TaskCreate(TaskScript):
    """One task; `id` picks its id (MiniMax, T2A and video: a positive int64, as a number
    or digit string; Jimmy and Replicate: URL-safe text; DashScope: a lowercase UUID; fal:
    `<owner>/<app>/<request_id uuid>`), otherwise the sandbox mints one in the provider's
    format."""

    id: StrictInt | StrictStr | None = None

    @model_validator(mode="after")
    def _id_fits_provider(self) -> Self:
        self.normalized_id()
        return self

    def normalized_id(self) -> str | None:
        if self.id is None:
            return None
        if self.provider in MINIMAX_PROVIDERS:
            value = parse_int64(str(self.id))
            if value is None:
                raise ValueError("a MiniMax id must be a positive 64-bit integer")
            return str(value)
        text = str(self.id)
        if self.provider == "dashscope":
            if not _UUID.fullmatch(text):
                raise ValueError("a DashScope id must be a lowercase UUID")
            return text
        if self.provider == "replicate" and not (
            text.isascii() and text.isalnum() and len(text) <= 64
        ):
            raise ValueError("a Replicate id must be 1-64 ASCII letters and digits")
        if self.provider == "assemblyai" and not _ASSEMBLYAI_ID.fullmatch(text):
            raise ValueError(
                "an AssemblyAI id must be 1-64 lowercase letters and digits in groups joined "
                "by single hyphens"
            )
        if self.provider == "fal":
            if not _FAL_ID.fullmatch(text):
                raise ValueError(
                    "a fal id must be <owner>/<app>/<request_id>: two segments of "
                    "A-Z a-z 0-9 . _ - (a letter or digit first), then a lowercase UUID"
                )
            return text
        if not _JIMMY_ID.fullmatch(text):
            raise ValueError("a Jimmy id must be 1-256 characters from A-Z a-z 0-9 . _ ~ -")
        return text


class TaskBatchCreate(TaskScript):
    """`count` tasks with the same script (benchmarks create thousands at once)."""

    count: int = Field(ge=1, le=MAX_BATCH)


class TaskCreated(BaseModel):
    provider: Provider
    id: int | str
    file_id: int | None = None
    ready_at: float


class TaskBatchCreated(BaseModel):
    provider: Provider
    count: int
    ids: list[int] | list[str]
    file_ids: list[int] | None = None
    ready_at: float


class TaskRead(BaseModel):
    """A task's script, its state now, and what was observed of it."""

    provider: Provider
    id: int | str
    file_id: int | None
    model_id: str | None
    created_at: float
    duration_s: float
    ready_at: float
    outcome: Outcome
    error_code: int | None
    error_message: str | None
    model: JimmyModel | None
    subtitles: bool
    status_case: StatusCase | None
    code_as_string: bool | None
    incomplete_queries: int
    queued_status: MinimaxQueued | None
    failed_status: MinimaxFailed | None
    file_not_ready_retrieves: int
    backup_url_only: bool
    url_ttl_s: float
    message_in_msg: bool
    result_bytes: int
    failed_downloads: int
    cut_downloads: int
    callback_url: str | None
    callback_sent_at: float | None = Field(
        description="Wall time the task's callback went (the first copy); null before."
    )
    callbacks_sent: int
    result_list_length: int | None
    error_name: str | None
    files: int
    failed_files: int
    phase: Phase
    status: str | None
    done: bool
    polls: int
    done_polls: int = Field(description="Status queries served once the task was done.")
    retrieves: int = Field(
        description="MiniMax File Retrieves, or fal result GETs, served for the task."
    )
    downloads: int = Field(
        description="Result file requests for the task that passed the URL check "
        "(served, or failed as scripted)."
    )
    first_done_poll_at: float | None
    queries: list[float] = Field(
        description="Wall times of the status queries served for the task (the first 100)."
    )
    last_query_at: float | None
    longest_gap_s: float | None = Field(
        description="The longest the task went without a status query: creation to the first "
        "query, then between consecutive queries. Null before the first query."
    )

    @classmethod
    def of(cls, task: Task, wall: float) -> TaskRead:
        minimax = task.provider in MINIMAX_PROVIDERS
        jimmy = task.provider == "jimmy"
        return cls(
            provider=task.provider,
            id=public_id(task),
            file_id=task.file_id,
            model_id=task.model_id,
            created_at=task.created_at,
            duration_s=task.duration_s,
            ready_at=task.ready_at,
            outcome=task.outcome,
            error_code=task.error_code,
            error_message=task.error_message,
            model=task.model if jimmy else None,
            subtitles=task.subtitles,
            status_case=task.status_case if minimax else None,
            code_as_string=task.code_as_string if jimmy else None,
            incomplete_queries=task.incomplete_queries,
            queued_status=task.queued_status,
            failed_status=task.failed_status if minimax else None,
            file_not_ready_retrieves=task.file_not_ready_retrieves,
            backup_url_only=task.backup_url_only,
            url_ttl_s=task.url_ttl_s,
            message_in_msg=task.message_in_msg,
            result_bytes=task.result_bytes,
            failed_downloads=task.failed_downloads,
            cut_downloads=task.cut_downloads,
            callback_url=task.callback_url,
            callback_sent_at=task.callback_sent_at,
            callbacks_sent=task.callbacks_sent,
            result_list_length=task.result_list_length,
            error_name=task.error_name,
            files=task.files,
            failed_files=task.failed_files,
            phase=task.phase(wall),
            status=task.status(wall),
            done=task.phase(wall) == "done",
            polls=task.polls,
            done_polls=task.done_polls,
            retrieves=task.retrieves,
            downloads=task.downloads,
            first_done_poll_at=task.first_done_poll_at,
            queries=list(task.query_times),
            last_query_at=task.last_query_at,
            longest_gap_s=task.longest_gap_s,
        )


def public_id(task: Task) -> int | str:
    """The id as the provider writes it: a JSON integer for MiniMax, a string for Jimmy."""
    return int(task.id) if task.provider == "minimax" else task.id


class FaultCreate(_Body):
    kind: FaultKind
    provider: Provider | None = None
    probability: float = Field(1.0, ge=0, le=1)
    latency_s: float | None = Field(None, ge=0, le=MAX_LATENCY_S)
    duration_s: float | None = Field(None, gt=0)
    count: int | None = Field(None, ge=1)

    def to_spec(self) -> FaultSpec:
        return FaultSpec(
            kind=self.kind,
            provider=self.provider,
            probability=self.probability,
            latency_s=self.latency_s,
            duration_s=self.duration_s,
            count=self.count,
        )


class FaultCreated(BaseModel):
    id: str


class FaultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: FaultKind
    provider: Provider | None
    probability: float
    latency_s: float
    created_at: float
    expires_at: float | None
    remaining: int | None
    injected: int

    @classmethod
    def of(cls, fault: Fault) -> FaultRead:
        return cls.model_validate(fault)


class FaultList(BaseModel):
    faults: list[FaultRead]


class Cleared(BaseModel):
    cleared: int


class KeyStatsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    requests: int
    rejected_rate_limited: int
    faults_injected: int
    max_in_any_1s_window: int
    timestamps_dropped: int
    per_second: dict[str, int]
    shortest_span_over_limit_s: float | None


class StatsRead(BaseModel):
    """Requests per provider, per API key (`(none)`: no key sent)."""

    minimax: dict[str, KeyStatsRead]
    jimmy: dict[str, KeyStatsRead]
    providers: dict[Provider, dict[str, KeyStatsRead]] = Field(
        description="Every provider's, MiniMax's and Jimmy's included."
    )

    @classmethod
    def of(cls, stats: dict[Provider, dict[str, KeyStats]]) -> StatsRead:
        def convert(per_key: dict[str, KeyStats]) -> dict[str, KeyStatsRead]:
            return {key: KeyStatsRead.model_validate(s) for key, s in per_key.items()}

        every = {provider: convert(per_key) for provider, per_key in stats.items()}
        return cls(minimax=every["minimax"], jimmy=every["jimmy"], providers=every)


class ConfigRead(BaseModel):
    minimax_rate: float
    jimmy_rate: float
    rates: dict[Provider, float] = Field(description="Every provider's, MiniMax's and Jimmy's too.")
    callback_secret: str = Field(
        description="What Standard Webhooks callbacks (Replicate's) are signed with: set it "
        "as the instance's callback_secret in pollhook."
    )
    seed: int | None
    tasks: int
    max_tasks: int


class ConfigUpdate(_Body):
    """New rate limits (requests per second per key; 0 = unlimited); omitted ones stay."""

    minimax_rate: float | None = Field(None, ge=0)
    jimmy_rate: float | None = Field(None, ge=0)
    rates: dict[Provider, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="Any provider's, by its name in the sandbox."
    )


class Health(BaseModel):
    status: str = "ok"
