"""The sandbox's in-memory model: scripted tasks, faults, rate limits and request counts.

Pure: no I/O and no clock reads. Everything that depends on time takes an `Instant` (the
arrival time of the request being served), so the HTTP layer passes real time and the tests
pass whatever time they need without sleeping. One event loop drives it, so no locks.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
import string
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlsplit

Provider = Literal[
    "minimax", "jimmy", "minimax_video", "replicate", "dashscope", "assemblyai", "fal", "elevenlabs"
]
# canceled: a task its creator canceled (Replicate's and DashScope's; no other fake has one).
Outcome = Literal["success", "failed", "expired", "error", "canceled"]
JimmyModel = Literal["clone", "audio"]
StatusCase = Literal["title", "lower"]
# MiniMax's words for a task that has not started (its video API's; T2A documents none) and
# for a failed one (T2A: Failed; video: Fail).
MinimaxQueued = Literal["Preparing", "Queueing"]
MinimaxFailed = Literal["Failed", "Fail"]
Phase = Literal["queued", "processing", "done"]
DownloadFault = Literal["unavailable", "cut"]
KeyProblem = Literal["missing", "bad", "bad_region"]
FaultKind = Literal[
    "latency",
    "timeout",
    "http_500",
    "http_503",
    "html",
    "malformed_json",
    "wrong_types",
    "rate_limit",
]

PROVIDERS: tuple[Provider, ...] = (
    "minimax",
    "jimmy",
    "minimax_video",
    "replicate",
    "dashscope",
    "assemblyai",
    "fal",
    "elevenlabs",
)
# The providers behind MiniMax's File Retrieve: their tasks have a file_id, and each retrieve
# mints a fresh download URL.
MINIMAX_PROVIDERS: tuple[Provider, ...] = ("minimax", "minimax_video")
# The providers whose tasks report a queued phase for the first third of their duration.
QUEUEING: tuple[Provider, ...] = (
    "jimmy",
    "replicate",
    "dashscope",
    "assemblyai",
    "fal",
    "elevenlabs",
)
STATUS_CASES: tuple[StatusCase, ...] = ("title", "lower")
INT64_MAX = 2**63 - 1
# Bounds that keep a long benchmark (or a runaway client) from exhausting memory.
MAX_TASKS = 1_000_000
MAX_TIMESTAMPS_PER_KEY = 2_000_000
MAX_KEYS_PER_PROVIDER = 10_000
MAX_KEY_LENGTH = 200
# Status queries whose times a task keeps (its longest gap is exact beyond this).
MAX_QUERY_TIMES_PER_TASK = 100
NO_KEY = "(none)"
OTHER_KEYS = "(other)"
# MiniMax download URLs live 9 hours from when File Retrieve mints them; Jimmy states no
# lifetime for its audio URLs, so the sandbox gives them the same from when the task finished.
DOWNLOAD_URL_TTL_S = 32_400
# The audio of a result (a second of MP3), unless a script asks for more.
DEFAULT_RESULT_BYTES = 16_384
MAX_RESULT_BYTES = 2**30
# Requests per second per API key of the providers the CLI sets no flag for: each one's
# documented query limit (docs/providers.md). PATCH /_sandbox/config changes any of them.
DEFAULT_RATES: dict[Provider, float] = {
    # MiniMax publishes no video query limit: pollhook's default, half T2A's 10/s.
    "minimax_video": 5.0,
    "replicate": 50.0,
    "dashscope": 20.0,
    "assemblyai": 66.0,  # 20,000 requests per 5 minutes
    "fal": 10.0,  # none published: pollhook's default for the kind
    "elevenlabs": 2.0,  # concurrency per plan, not a rate: pollhook's reading of it
}
# A scripted "error" outcome answers with these unless the script names a code.
DEFAULT_ERRORS: dict[Provider, tuple[int, str]] = {
    "minimax": (2013, "invalid params"),
    "jimmy": (20002, "invalid params"),
    "minimax_video": (2013, "invalid params"),
    "replicate": (404, "Not found."),  # an HTTP status, with its RFC 7807 detail
    # DashScope names its errors: the number is the HTTP status, `error_name` the code.
    "dashscope": (400, "task_id is invalid"),
    # AssemblyAI's are HTTP statuses with an `{"error": ...}` body.
    "assemblyai": (400, "Transcript lookup error, transcript id not found"),
    # fal: the HTTP status the result answers with (the model's validation error).
    "fal": (422, "field required"),
    # ElevenLabs answers errors with an HTTP status: the code is that status.
    "elevenlabs": (404, "Dubbing not found"),
}
# The code of a scripted DashScope refusal ("error"), failure ("failed") or failed files of
# a task that succeeded ("success") unless the script names one (`error_name`).
DEFAULT_ERROR_NAMES: dict[Provider, dict[Outcome, str]] = {
    "dashscope": {
        "error": "InvalidParameter",
        "failed": "InvalidFile.DownloadFailed",
        "success": "InvalidFile.DownloadFailed",
    },
}
DEFAULT_FAILURE_MESSAGE = "audio generation failed"
DEFAULT_LATENCY_S: dict[FaultKind, float] = {"latency": 1.0, "timeout": 30.0}
MAX_LATENCY_S = 120.0

# The ends only some providers have (Jimmy's, MiniMax video's, fal's and ElevenLabs' tasks
# never expire; only Replicate and DashScope cancel), and who has them.
OUTCOME_OWNERS: dict[Outcome, tuple[Provider, ...]] = {
    "expired": ("minimax", "replicate", "dashscope", "assemblyai"),
    "canceled": ("replicate", "dashscope"),
}
# The providers as messages name them.
PROVIDER_NAMES: dict[Provider, str] = {
    "minimax": "MiniMax",
    "jimmy": "Jimmy",
    "minimax_video": "MiniMax video",
    "replicate": "Replicate",
    "dashscope": "DashScope",
    "assemblyai": "AssemblyAI",
    "fal": "fal",
    "elevenlabs": "ElevenLabs",
}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: wall time (`time.time()`) for what is reported, monotonic
    time (`time.monotonic()`) for windows, which must not jump with the wall clock."""

    wall: float
    mono: float


# What `pollhook sandbox` signs its Standard Webhooks callbacks with unless told otherwise
# (--callback-secret): a sandbox value, in the form Replicate's signing secret has.
DEFAULT_CALLBACK_SECRET = "whsec_cG9sbGhvb2sgc2FuZGJveCBjYWxsYmFjayBzZWNyZXQ="


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Start-up settings; rates are requests per second per API key, 0 = unlimited."""

    minimax_rate: float = 10.0
    jimmy_rate: float = 5.0
    # Any other provider's, over DEFAULT_RATES.
    rates: dict[Provider, float] = field(default_factory=dict)
    callback_secret: str = DEFAULT_CALLBACK_SECRET
    seed: int | None = None
    max_tasks: int = MAX_TASKS
    max_timestamps_per_key: int = MAX_TIMESTAMPS_PER_KEY


class SandboxError(Exception):
    """A control request the sandbox cannot honour; the message says why."""


class DuplicateTask(SandboxError):
    pass


class TooManyTasks(SandboxError):
    pass


# ---------------------------------------------------------------------------------------------
# Requests: keys and parameters


def bearer_key(header: str | None) -> str | None:
    """The key in `Authorization: Bearer <key>`, or None when the header is absent or malformed."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def key_problem(key: str | None) -> KeyProblem | None:
    """Why a provider would refuse `key`. Keys starting with `bad-region` imitate a key sent to
    the other region's host (MiniMax 2049 with HTTP 401); other `bad...` keys are just wrong."""
    if key is None:
        return "missing"
    if key.startswith("bad-region"):
        return "bad_region"
    if key.startswith("bad"):
        return "bad"
    return None


def is_loopback_url(url: str) -> bool:
    """Whether `url` is http(s) on this machine (127.0.0.0/8, [::1], localhost)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_int64(raw: str | None) -> int | None:
    """A positive int64 written in decimal digits, as MiniMax ids are; None for anything else."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= INT64_MAX else None


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a test scripts for one task; None fields are filled in (randomly where noted)."""

    provider: Provider
    duration_s: float = 5.0
    outcome: Outcome = "success"
    error_code: int | None = None
    error_message: str | None = None
    model: JimmyModel = "audio"
    subtitles: bool = False
    status_case: StatusCase | None = None  # MiniMax; random when None
    code_as_string: bool | None = None  # Jimmy; random when None
    id: str | None = None
    # Answers that say done without the result, for this many status queries once done
    # (MiniMax: Success without file_id; Jimmy: completed without audioUrl).
    incomplete_queries: int = 0
    queued_status: MinimaxQueued | None = None  # MiniMax: queued for the first third
    failed_status: MinimaxFailed | None = None  # MiniMax; None: the API's own word
    # MiniMax File Retrieve: 2013 for this many calls after Success (the file not ready
    # yet); only backup_download_url.
    file_not_ready_retrieves: int = 0
    backup_url_only: bool = False
    url_ttl_s: float = DOWNLOAD_URL_TTL_S  # result URLs' own lifetime (their `expires=`)
    message_in_msg: bool = False  # Jimmy: a failure says error: null, the envelope's msg why
    result_bytes: int = DEFAULT_RESULT_BYTES  # the length of the result's audio
    # The task's first downloads that fail: this many answer 503, the next this many are
    # cut off halfway through the body.
    failed_downloads: int = 0
    cut_downloads: int = 0
    # Where the provider posts when the task ends (providers that call back), how long
    # after it ends, and how many times the same message goes (a provider's retry, or a
    # replay to be refused).
    callback_url: str | None = None
    callback_delay_s: float = 0.0
    callback_copies: int = 1
    # Replicate: the output is a list of this many file URLs; None: one URL as a bare string.
    result_list_length: int | None = None
    # The provider's error code when it is a name, not a number (DashScope's
    # `InvalidFile.DownloadFailed`); a default per provider when None.
    error_name: str | None = None
    # Input files of the task, each its own subtask (DashScope's file transcription), and
    # how many of them (the first ones) fail while the task still succeeds.
    files: int = 1
    failed_files: int = 0


@dataclass(slots=True)
class Task:
    """A scripted task and what has been observed of it."""

    provider: Provider
    id: str
    created_at: float
    duration_s: float
    outcome: Outcome
    error_code: int | None
    error_message: str | None
    model: JimmyModel
    subtitles: bool
    status_case: StatusCase
    code_as_string: bool
    incomplete_queries: int = 0
    queued_status: MinimaxQueued | None = None
    failed_status: MinimaxFailed = "Failed"
    file_not_ready_retrieves: int = 0
    backup_url_only: bool = False
    url_ttl_s: float = DOWNLOAD_URL_TTL_S
    message_in_msg: bool = False
    result_bytes: int = DEFAULT_RESULT_BYTES
    failed_downloads: int = 0
    cut_downloads: int = 0
    callback_url: str | None = None
    callback_delay_s: float = 0.0
    callback_copies: int = 1
    # Wall time the (first) callback went, and how many went.
    callback_sent_at: float | None = None
    callbacks_sent: int = 0
    result_list_length: int | None = None
    error_name: str | None = None
    files: int = 1
    failed_files: int = 0
    file_id: int | None = None
    model_id: str | None = None
    polls: int = 0
    # Status queries served once the task was done, and File Retrieves served for it.
    done_polls: int = 0
    retrieves: int = 0
    downloads: int = 0  # result file requests that passed the URL check
    first_done_poll_at: float | None = None
    query_times: list[float] = field(default_factory=list)  # wall; MAX_QUERY_TIMES_PER_TASK
    last_query_at: float | None = None
    # The longest time the task went unqueried: from creation to the first status query,
    # then between consecutive ones. None until the first query.
    longest_gap_s: float | None = None

    @property
    def ready_at(self) -> float:
        return self.created_at + self.duration_s

    def phase(self, wall: float) -> Phase:
        """Jimmy, DashScope, fal, ElevenLabs and AssemblyAI (queued while an account is over its
        concurrency limit) queue a task for the first third of its duration (Replicate:
        starting, then processing); MiniMax reports Processing from creation until the task
        is done, unless scripted to say Preparing or Queueing for the first third."""
        if wall >= self.ready_at:
            return "done"
        queues = self.provider in QUEUEING
        queues = queues or self.queued_status is not None
        if queues and wall < self.created_at + self.duration_s / 3:
            return "queued"
        return "processing"

    def status(self, wall: float) -> str | None:
        """The status the provider reports at `wall`; None once a scripted error answers
        instead of a status."""
        phase = self.phase(wall)
        if self.provider == "jimmy":
            return _JIMMY_STATUS[phase] if phase != "done" else _JIMMY_OUTCOME[self.outcome]
        if self.provider == "replicate":
            if phase == "done":
                return _REPLICATE_OUTCOME[self.outcome]
            # Aborted: its deadline passed before it could start running.
            aborts = self.outcome == "expired"
            return "starting" if phase == "queued" or aborts else "processing"
        if self.provider == "dashscope":
            return _DASHSCOPE_STATUS[phase] if phase != "done" else _DASHSCOPE_OUTCOME[self.outcome]
        if self.provider == "assemblyai":
            return phase if phase != "done" else _ASSEMBLYAI_OUTCOME[self.outcome]
        if self.provider == "fal":
            return _FAL_STATUS[phase]
        if self.provider == "elevenlabs":
            done = _ELEVENLABS_OUTCOME[self.outcome]
            return _ELEVENLABS_STATUS[phase] if phase != "done" else done
        if phase == "queued":
            word: str | None = self.queued_status
        elif phase == "processing":
            word = "processing"
        elif self.outcome == "failed":
            word = self.failed_status
        else:
            word = _MINIMAX_OUTCOME[self.outcome]
        if word is None:
            return None
        return word.lower() if self.status_case == "lower" else word.title()

    @property
    def incomplete(self) -> bool:
        """Whether the status query being served says done without the result (counted
        by `done_polls`, which `observe` has already advanced for it)."""
        return 0 < self.done_polls <= self.incomplete_queries

    def has_result(self, wall: float) -> bool:
        """Whether the task's result files exist at `wall`: once it has succeeded."""
        return self.outcome == "success" and wall >= self.ready_at

    def url_expiry(self, minted_at: float) -> int:
        """The `expires=` of a result URL handed out at `minted_at`: MiniMax mints one per
        File Retrieve; Jimmy's last from when the task finished, so every answer repeats it."""
        start = minted_at if self.provider in MINIMAX_PROVIDERS else self.ready_at
        return int(start + self.url_ttl_s)

    def download_fault(self) -> DownloadFault | None:
        """What goes wrong with the download being served (counted by `downloads`, which the
        route has already advanced for it): the scripted 503s first, then the cut ones."""
        if self.downloads <= self.failed_downloads:
            return "unavailable"
        if self.downloads <= self.failed_downloads + self.cut_downloads:
            return "cut"
        return None

    def url_refusal(self, expires: str | None, wall: float) -> str | None:
        """Why a result URL with this `expires=` is refused at `wall` (None: it is not), as a
        signed object-store URL is: expired, or not an expiry this task could have minted."""
        if expires is None or not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            return "Invalid argument: expires"
        if int(expires) < wall:
            return "Request has expired"
        if int(expires) > self.url_expiry(wall):
            return "The request signature we calculated does not match the signature you provided"
        return None


_JIMMY_STATUS: dict[Phase, str] = {"queued": "queued", "processing": "processing"}
_JIMMY_OUTCOME: dict[Outcome, str | None] = {
    "success": "completed",
    "failed": "failed",
    "expired": "failed",  # not a Jimmy state; the control API refuses it
    "error": None,
}
_REPLICATE_OUTCOME: dict[Outcome, str | None] = {
    "success": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "expired": "aborted",
    "error": None,
}

_DASHSCOPE_STATUS: dict[Phase, str] = {"queued": "PENDING", "processing": "RUNNING"}
_DASHSCOPE_OUTCOME: dict[Outcome, str | None] = {
    "success": "SUCCEEDED",
    "failed": "FAILED",
    "expired": "UNKNOWN",  # its data deleted: DashScope no longer knows the task
    "error": None,
    "canceled": "CANCELED",
}

# An expired AssemblyAI transcript is one deleted upstream: it answers completed, emptied.
_ASSEMBLYAI_OUTCOME: dict[Outcome, str | None] = {
    "success": "completed",
    "failed": "error",
    "expired": "completed",
    "error": None,
}

# fal says COMPLETED however a request ended: its error (or its result's) tells how.
_FAL_STATUS: dict[Phase, str] = {
    "queued": "IN_QUEUE",
    "processing": "IN_PROGRESS",
    "done": "COMPLETED",
}

_ELEVENLABS_STATUS: dict[Phase, str] = {"queued": "queued", "processing": "dubbing"}
_ELEVENLABS_OUTCOME: dict[Outcome, str | None] = {
    "success": "dubbed",
    "failed": "failed",
    "expired": "failed",  # not an ElevenLabs state; the control API refuses it
    "error": None,
}
_MINIMAX_OUTCOME: dict[Outcome, str | None] = {
    "success": "success",
    "failed": "failed",
    "expired": "expired",
    "error": None,
}


_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = string.ascii_letters + string.digits


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# A fresh id as each provider writes its own: MiniMax 14-digit integers like the docs'
# 95157322514444, Jimmy `audio_<uuid>`, MiniMax video 15 digits (as a string) like its
# docs' "106916112212032".
ID_FORMATS: dict[Provider, Callable[[random.Random], str]] = {
    "minimax": lambda rng: str(rng.randrange(10**13, 10**14)),
    "jimmy": lambda rng: f"audio_{_uuid(rng)}",
    "minimax_video": lambda rng: str(rng.randrange(10**14, 10**15)),
    # Replicate: 26 lowercase letters and digits, like gm3qorzdhgbfurvjtvhg6dckhu.
    "replicate": lambda rng: "".join(rng.choice(_ID_ALPHABET) for _ in range(26)),
    "dashscope": _uuid,
    "assemblyai": _uuid,
    # fal: pollhook's external id, `<owner>/<app>/<request_id uuid>` (fal routes a request
    # by its model).
    "fal": lambda rng: f"fal-ai/sandbox-tts/{_uuid(rng)}",
    # ElevenLabs: 20 letters and digits, like the docs' 21m00Tcm4TlvDq8ikWAM.
    "elevenlabs": lambda rng: "".join(rng.choice(_ALNUM) for _ in range(20)),
}
# The word each MiniMax API uses for a failed task, unless a script picks the other.
FAILED_WORDS: dict[Provider, MinimaxFailed] = {"minimax": "Failed", "minimax_video": "Fail"}


class TaskStore:
    """Tasks by (provider, id), and MiniMax tasks by file_id for File Retrieve."""

    def __init__(self, max_tasks: int) -> None:
        self.max_tasks = max_tasks
        self._tasks: dict[tuple[Provider, str], Task] = {}
        self._files: dict[int, Task] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, provider: Provider, task_id: str) -> Task | None:
        return self._tasks.get((provider, task_id))

    def by_file(self, file_id: int) -> Task | None:
        return self._files.get(file_id)

    def has_file(self, file_id: int) -> bool:
        return file_id in self._files

    def add(self, task: Task) -> None:
        if (task.provider, task.id) in self._tasks:
            raise DuplicateTask(f"{task.provider} task {task.id} already exists")
        self._tasks[task.provider, task.id] = task
        if task.file_id is not None:
            self._files[task.file_id] = task

    def reserve(self, count: int) -> None:
        """Refuse a creation that would pass the cap, before any task of it is made."""
        if len(self._tasks) + count > self.max_tasks:
            raise TooManyTasks(
                f"the sandbox holds at most {self.max_tasks} tasks "
                f"({len(self._tasks)} now); POST /_sandbox/reset to start over"
            )


# ---------------------------------------------------------------------------------------------
# Rate limiting and request counting


def rate_window(rate: float) -> tuple[int, float] | None:
    """(requests admitted, window in seconds) for a per-second rate; None means unlimited.

    A one-second window admits floor(rate) requests. Rates under 1/s widen the window so one
    request fits (0.2/s admits one per 5 s), since a one-second window cannot hold a fraction.
    """
    if rate <= 0:
        return None
    if rate >= 1:
        return int(rate), 1.0
    return 1, 1.0 / rate


def admit_in_window(accepted: deque[float], mono: float, limit: int, window_s: float) -> bool:
    """Sliding-window limiter over accepted requests: admit (and remember) the request at
    `mono` unless `limit` accepted requests already lie within the last `window_s`.

    "Within" uses the same test as `max_in_window` (t - earlier < window), so no half-open
    window of accepted requests can ever be seen holding more than `limit`.
    """
    while accepted and mono - accepted[0] >= window_s:
        accepted.popleft()
    if len(accepted) >= limit:
        return False
    accepted.append(mono)
    return True


def max_in_window(timestamps: Iterable[float], window_s: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + window_s), exactly.

    Two pointers over the sorted times: the best window can always start at a timestamp.
    """
    ordered = sorted(timestamps)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(slots=True)
class KeyTraffic:
    """Every request that arrived for one (provider, key), before limits or faults."""

    arrivals: deque[float]  # monotonic; the most recent ones when over the cap
    requests: int = 0
    rejected_rate_limited: int = 0
    faults_injected: int = 0
    per_second: dict[int, int] = field(default_factory=dict)
    accepted: deque[float] = field(default_factory=deque)  # the limiter's window

    def record(self, at: Instant) -> None:
        self.requests += 1
        self.arrivals.append(at.mono)
        second = int(at.wall)
        self.per_second[second] = self.per_second.get(second, 0) + 1


def shortest_span(timestamps: Iterable[float], count: int) -> float | None:
    """The shortest time in which `count` timestamps fall (last minus first), or None when
    there are fewer. With `count` one over a limit, how far from a violation the traffic
    came: a span under the window is one."""
    ordered = sorted(timestamps)
    if count < 1 or len(ordered) < count:
        return None
    return min(ordered[i + count - 1] - ordered[i] for i in range(len(ordered) - count + 1))


@dataclass(frozen=True, slots=True)
class KeyStats:
    requests: int
    rejected_rate_limited: int
    faults_injected: int
    max_in_any_1s_window: int
    timestamps_dropped: int
    per_second: dict[str, int]
    # The shortest time in which one request more than the window admits arrived (None:
    # unlimited, or never that many); under the window's length is a violation.
    shortest_span_over_limit_s: float | None


def key_stats(traffic: KeyTraffic, rate: float) -> KeyStats:
    window = rate_window(rate)
    return KeyStats(
        requests=traffic.requests,
        rejected_rate_limited=traffic.rejected_rate_limited,
        faults_injected=traffic.faults_injected,
        max_in_any_1s_window=max_in_window(traffic.arrivals),
        timestamps_dropped=traffic.requests - len(traffic.arrivals),
        per_second={str(second): n for second, n in sorted(traffic.per_second.items())},
        shortest_span_over_limit_s=(
            None if window is None else shortest_span(traffic.arrivals, window[0] + 1)
        ),
    )


class Traffic:
    """Request counts per (provider, key), with a bounded number of keys and timestamps."""

    def __init__(self, max_timestamps: int, max_keys: int = MAX_KEYS_PER_PROVIDER) -> None:
        self.max_timestamps = max_timestamps
        self.max_keys = max_keys
        self._keys: dict[tuple[Provider, str], KeyTraffic] = {}
        self._key_counts: dict[Provider, int] = dict.fromkeys(PROVIDERS, 0)

    def record(self, provider: Provider, key: str | None, at: Instant) -> KeyTraffic:
        traffic = self._keys.get((provider, self._label(provider, key)))
        if traffic is None:
            traffic = self._open(provider, key)
        traffic.record(at)
        return traffic

    def stats(self, rates: dict[Provider, float]) -> dict[Provider, dict[str, KeyStats]]:
        """Counts per key, measured against each provider's rate (0 = unlimited)."""
        result: dict[Provider, dict[str, KeyStats]] = {p: {} for p in PROVIDERS}
        for (provider, key), traffic in self._keys.items():
            result[provider][key] = key_stats(traffic, rates[provider])
        return result

    def _label(self, provider: Provider, key: str | None) -> str:
        """The name a key is counted under: keys are cut to a sane length, requests without
        one share a label, and keys beyond the per-provider cap share another."""
        if key is None:
            return NO_KEY
        label = key[:MAX_KEY_LENGTH]
        if (provider, label) in self._keys or self._key_counts[provider] < self.max_keys:
            return label
        return OTHER_KEYS

    def _open(self, provider: Provider, key: str | None) -> KeyTraffic:
        label = self._label(provider, key)
        traffic = self._keys.get((provider, label))
        if traffic is None:
            traffic = KeyTraffic(arrivals=deque(maxlen=self.max_timestamps))
            self._keys[provider, label] = traffic
            self._key_counts[provider] += 1
        return traffic


# ---------------------------------------------------------------------------------------------
# Faults


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: FaultKind
    provider: Provider | None = None  # None: both providers
    probability: float = 1.0
    latency_s: float | None = None  # latency/timeout; a per-kind default when None
    duration_s: float | None = None  # active for this long; forever when None
    count: int | None = None  # at most this many injections; unlimited when None


@dataclass(slots=True)
class Fault:
    id: str
    kind: FaultKind
    provider: Provider | None
    probability: float
    latency_s: float
    created_at: float
    expires_at: float | None  # wall time, for reports
    expires_mono: float | None  # monotonic, for decisions
    remaining: int | None
    injected: int = 0

    def live(self, mono: float) -> bool:
        unexpired = self.expires_mono is None or mono < self.expires_mono
        return unexpired and (self.remaining is None or self.remaining > 0)

    def applies_to(self, provider: Provider) -> bool:
        return self.provider is None or self.provider == provider


def fault_latency(kind: FaultKind, latency_s: float | None) -> float:
    """How long a fault holds the request: only latency and timeout hold it at all."""
    if kind not in DEFAULT_LATENCY_S:
        return 0.0
    value = DEFAULT_LATENCY_S[kind] if latency_s is None else latency_s
    return min(max(value, 0.0), MAX_LATENCY_S)


class FaultBook:
    """Active faults in the order they were added; the first one that fires wins."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}
        self._next_id = 1

    def add(self, spec: FaultSpec, at: Instant) -> Fault:
        fault = Fault(
            id=f"flt_{self._next_id}",
            kind=spec.kind,
            provider=spec.provider,
            probability=min(max(spec.probability, 0.0), 1.0),
            latency_s=fault_latency(spec.kind, spec.latency_s),
            created_at=at.wall,
            expires_at=None if spec.duration_s is None else at.wall + spec.duration_s,
            expires_mono=None if spec.duration_s is None else at.mono + spec.duration_s,
            remaining=spec.count,
        )
        self._next_id += 1
        self._faults[fault.id] = fault
        return fault

    def remove(self, fault_id: str) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        self._faults.clear()

    def live(self, at: Instant) -> list[Fault]:
        """The faults still active; spent and expired ones are dropped here."""
        for fault in [f for f in self._faults.values() if not f.live(at.mono)]:
            del self._faults[fault.id]
        return list(self._faults.values())

    def pick(self, provider: Provider, at: Instant, roll: Callable[[], float]) -> Fault | None:
        """The fault to inject into one request, if any: each live fault for the provider in
        turn rolls against its probability; the first hit is consumed and returned."""
        for fault in self.live(at):
            if fault.applies_to(provider) and roll() < fault.probability:
                fault.injected += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None


# ---------------------------------------------------------------------------------------------
# The whole sandbox


@dataclass(frozen=True, slots=True)
class Admission:
    """What happens to a provider request before it is answered: refused by the rate limiter,
    or handed a fault (None: answer normally)."""

    rate_limited: bool = False
    fault: Fault | None = None


class Sandbox:
    """The state behind one sandbox server."""

    rng: random.Random
    tasks: TaskStore
    faults: FaultBook
    traffic: Traffic

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.rates: dict[Provider, float] = {
            **DEFAULT_RATES,
            **self.config.rates,
            "minimax": self.config.minimax_rate,
            "jimmy": self.config.jimmy_rate,
        }
        self.reset()

    def reset(self) -> None:
        """Forget tasks, faults and counts; re-seed so a seeded run repeats after a reset.
        The rates stay as configured."""
        self.rng = random.Random(self.config.seed)
        self.tasks = TaskStore(self.config.max_tasks)
        # Tasks whose callback is still to go, by when it goes (then creation order).
        self._callbacks: list[tuple[float, int, Task]] = []
        # This server as the last scripting client reached it: the URLs in callbacks.
        self.origin = "http://127.0.0.1"
        self.faults = FaultBook()
        self.traffic = Traffic(self.config.max_timestamps_per_key)

    def admit(self, provider: Provider, key: str | None, at: Instant) -> Admission:
        """Count a provider request, then apply the rate limit, then maybe a fault."""
        traffic = self.traffic.record(provider, key, at)
        window = rate_window(self.rates[provider])
        if window is not None and not admit_in_window(traffic.accepted, at.mono, *window):
            traffic.rejected_rate_limited += 1
            return Admission(rate_limited=True)
        fault = self.faults.pick(provider, at, self.rng.random)
        if fault is not None:
            traffic.faults_injected += 1
        return Admission(fault=fault)

    def choose(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def create_tasks(self, spec: TaskSpec, at: Instant, count: int = 1) -> list[Task]:
        """Create `count` tasks from one script, all at `at`; all or none."""
        owners = OUTCOME_OWNERS.get(spec.outcome)
        if owners is not None and spec.provider not in owners:
            name = PROVIDER_NAMES[spec.provider]
            raise SandboxError(f"{spec.outcome} is not a {name} task state")
        if spec.id is not None and count != 1:
            raise SandboxError("an explicit id names a single task")
        self.tasks.reserve(count)
        if spec.id is not None and self.tasks.get(spec.provider, spec.id) is not None:
            raise DuplicateTask(f"{spec.provider} task {spec.id} already exists")
        created: list[Task] = []
        for _ in range(count):
            task = self._new_task(spec, at)
            self.tasks.add(task)  # at once, so the next fresh id is checked against it
            created.append(task)
            if task.callback_url is not None:
                due = task.ready_at + task.callback_delay_s
                heapq.heappush(self._callbacks, (due, len(self.tasks), task))
        return created

    def due_callbacks(self, wall: float) -> list[Task]:
        """The tasks whose callback is due at `wall`, taken off the queue."""
        due: list[Task] = []
        while self._callbacks and self._callbacks[0][0] <= wall:
            due.append(heapq.heappop(self._callbacks)[2])
        return due

    def next_callback_at(self) -> float | None:
        return self._callbacks[0][0] if self._callbacks else None

    def observe(self, task: Task, at: Instant) -> None:
        """Note a status query served for `task`: benchmarks measure detection delay as
        `first_done_poll_at - ready_at`, and the longest the task went unqueried."""
        task.polls += 1
        if task.phase(at.wall) == "done":
            task.done_polls += 1
            if task.first_done_poll_at is None:
                task.first_done_poll_at = at.wall
        previous = task.created_at if task.last_query_at is None else task.last_query_at
        gap = at.wall - previous
        task.longest_gap_s = gap if task.longest_gap_s is None else max(task.longest_gap_s, gap)
        task.last_query_at = at.wall
        if len(task.query_times) < MAX_QUERY_TIMES_PER_TASK:
            task.query_times.append(at.wall)

    def _new_task(self, spec: TaskSpec, at: Instant) -> Task:
        code, message = self._error_of(spec)
        task = Task(
            provider=spec.provider,
            id=spec.id or self._new_id(spec.provider),
            created_at=at.wall,
            duration_s=spec.duration_s,
            outcome=spec.outcome,
            error_code=code,
            error_message=message,
            model=spec.model,
            subtitles=spec.subtitles,
            status_case=(
                self.rng.choice(STATUS_CASES) if spec.status_case is None else spec.status_case
            ),
            code_as_string=(
                self.rng.random() < 0.5 if spec.code_as_string is None else spec.code_as_string
            ),
            incomplete_queries=spec.incomplete_queries,
            queued_status=spec.queued_status,
            failed_status=spec.failed_status or FAILED_WORDS.get(spec.provider, "Failed"),
            file_not_ready_retrieves=spec.file_not_ready_retrieves,
            backup_url_only=spec.backup_url_only,
            url_ttl_s=spec.url_ttl_s,
            message_in_msg=spec.message_in_msg,
            result_bytes=spec.result_bytes,
            failed_downloads=spec.failed_downloads,
            cut_downloads=spec.cut_downloads,
            callback_url=spec.callback_url,
            callback_delay_s=spec.callback_delay_s,
            callback_copies=spec.callback_copies,
            result_list_length=spec.result_list_length,
            error_name=self._error_name_of(spec),
            files=spec.files,
            failed_files=spec.failed_files,
        )
        if spec.provider in MINIMAX_PROVIDERS:
            task.file_id = self._new_file_id()
        elif spec.model == "clone":
            task.model_id = f"model_{self.rng.randrange(10**8, 10**9)}"
        return task

    @staticmethod
    def _error_of(spec: TaskSpec) -> tuple[int | None, str | None]:
        if spec.outcome == "error":
            default_code, default_message = DEFAULT_ERRORS[spec.provider]
            code = default_code if spec.error_code is None else spec.error_code
            return code, spec.error_message or default_message
        if spec.outcome == "failed":
            return spec.error_code, spec.error_message or DEFAULT_FAILURE_MESSAGE
        return None, None

    @staticmethod
    def _error_name_of(spec: TaskSpec) -> str | None:
        if spec.error_name is not None:
            return spec.error_name
        return DEFAULT_ERROR_NAMES.get(spec.provider, {}).get(spec.outcome)

    def _new_id(self, provider: Provider) -> str:
        """A fresh id in the provider's own format (`ID_FORMATS`), drawn from the seeded RNG."""
        while True:
            candidate = ID_FORMATS[provider](self.rng)
            if self.tasks.get(provider, candidate) is None:
                return candidate

    def _new_file_id(self) -> int:
        while True:
            candidate = self.rng.randrange(10**13, 10**14)
            if not self.tasks.has_file(candidate):
                return candidate
