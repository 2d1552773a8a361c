"""The sandbox's pure model, driven by explicit instants (no sleeping, no I/O)."""

from __future__ import annotations

import random
import re
from collections import deque

import pytest

from app.sandbox.state import (
    DEFAULT_FAILURE_MESSAGE,
    DEFAULT_RATES,
    INT64_MAX,
    NO_KEY,
    OTHER_KEYS,
    PROVIDERS,
    DuplicateTask,
    FaultBook,
    FaultKind,
    FaultSpec,
    Instant,
    KeyProblem,
    Outcome,
    Provider,
    Sandbox,
    SandboxConfig,
    SandboxError,
    StatusCase,
    TaskSpec,
    TooManyTasks,
    Traffic,
    admit_in_window,
    bearer_key,
    fault_latency,
    key_problem,
    max_in_window,
    parse_int64,
    rate_window,
    shortest_span,
)

T0 = Instant(wall=1_800_000_000.0, mono=500.0)


def at(offset: float) -> Instant:
    return Instant(wall=T0.wall + offset, mono=T0.mono + offset)


def unlimited(seed: int = 1) -> Sandbox:
    return Sandbox(SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=seed))


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("", None),
        ("Bearer k1", "k1"),
        ("bearer  k1 ", "k1"),
        ("BEARER k1", "k1"),
        ("Basic k1", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("k1", None),
    ],
)
def test_bearer_key(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (None, "missing"),
        ("bad-region-cn", "bad_region"),
        ("bad-region", "bad_region"),
        ("bad", "bad"),
        ("badkey", "bad"),
        ("bad-regio", "bad"),
        ("good", None),
        ("not-bad", None),
    ],
)
def test_key_problem(key: str | None, problem: KeyProblem | None) -> None:
    assert key_problem(key) == problem


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1),
        ("95157322514444", 95157322514444),
        ("007", 7),
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MAX + 1), None),
        ("0", None),
        ("-1", None),
        ("+1", None),
        ("1.5", None),
        ("1e3", None),
        (" 1", None),
        ("", None),
        (None, None),
        ("abc", None),
        ("\u0663", None),  # an Arabic-Indic digit: isdigit() but not ASCII
        ("1" * 100, None),
    ],
)
def test_parse_int64(raw: str | None, value: int | None) -> None:
    assert parse_int64(raw) == value


# --- task lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "case", "offset", "status"),
    [
        ("success", "title", 0.0, "Processing"),
        ("success", "title", 1.0, "Processing"),  # no queued state at MiniMax
        ("success", "title", 8.99, "Processing"),
        ("success", "title", 9.0, "Success"),
        ("success", "lower", 0.0, "processing"),
        ("success", "lower", 9.0, "success"),
        ("failed", "title", 9.0, "Failed"),
        ("failed", "lower", 100.0, "failed"),
        ("expired", "title", 8.0, "Processing"),
        ("expired", "title", 9.0, "Expired"),
        ("expired", "lower", 9.0, "expired"),
        ("error", "title", 8.0, "Processing"),
        ("error", "title", 9.0, None),
    ],
)
def test_minimax_status_over_time(
    outcome: Outcome, case: StatusCase, offset: float, status: str | None
) -> None:
    sandbox = unlimited()
    spec = TaskSpec("minimax", duration_s=9, outcome=outcome, status_case=case)
    (task,) = sandbox.create_tasks(spec, T0)
    assert task.status(T0.wall + offset) == status


@pytest.mark.parametrize(
    ("spec", "offset", "status"),
    [
        (TaskSpec("minimax", 9, status_case="title", queued_status="Preparing"), 0.0, "Preparing"),
        (TaskSpec("minimax", 9, status_case="lower", queued_status="Queueing"), 2.99, "queueing"),
        (TaskSpec("minimax", 9, status_case="title", queued_status="Queueing"), 3.0, "Processing"),
        (TaskSpec("minimax", 9, status_case="title", queued_status="Queueing"), 9.0, "Success"),
        (TaskSpec("minimax", 9, "failed", status_case="title", failed_status="Fail"), 9.0, "Fail"),
        (TaskSpec("minimax", 9, "failed", status_case="lower", failed_status="Fail"), 9.0, "fail"),
        (
            TaskSpec("minimax", 9, "expired", status_case="lower", failed_status="Fail"),
            9,
            "expired",
        ),
    ],
)
def test_minimax_scripted_words(spec: TaskSpec, offset: float, status: str) -> None:
    (task,) = unlimited().create_tasks(spec, T0)
    assert task.status(T0.wall + offset) == status


@pytest.mark.parametrize(
    ("outcome", "offset", "status"),
    [
        ("success", 0.0, "queued"),
        ("success", 2.99, "queued"),
        ("success", 3.0, "processing"),
        ("success", 8.99, "processing"),
        ("success", 9.0, "completed"),
        ("failed", 9.0, "failed"),
        ("error", 5.0, "processing"),
        ("error", 9.0, None),
    ],
)
def test_jimmy_status_over_time(outcome: Outcome, offset: float, status: str | None) -> None:
    (task,) = unlimited().create_tasks(TaskSpec("jimmy", duration_s=9, outcome=outcome), T0)
    assert task.status(T0.wall + offset) == status


@pytest.mark.parametrize("provider", ["minimax", "jimmy"])
def test_zero_duration_is_done_at_once(provider: Provider) -> None:
    (task,) = unlimited().create_tasks(TaskSpec(provider, duration_s=0), T0)
    assert task.phase(T0.wall) == "done"
    assert task.ready_at == T0.wall


@pytest.mark.parametrize(
    ("provider", "outcome", "offset", "has"),
    [
        ("minimax", "success", 9.9, False),
        ("minimax", "success", 10, True),
        ("minimax", "failed", 10, False),
        ("minimax", "expired", 10, False),
        ("jimmy", "success", 10, True),
        ("jimmy", "error", 10, False),
    ],
)
def test_result_files_exist_once_the_task_succeeded(
    provider: Provider, outcome: Outcome, offset: float, has: bool
) -> None:
    (task,) = unlimited().create_tasks(TaskSpec(provider, duration_s=10, outcome=outcome), T0)
    assert task.has_result(T0.wall + offset) is has


@pytest.mark.parametrize(
    ("provider", "minted_at", "expires"),
    [
        ("minimax", 10, 70),  # from each File Retrieve
        ("minimax", 500.7, 560),
        ("jimmy", 10, 70),  # from when the task finished, whenever asked
        ("jimmy", 500.7, 70),
    ],
)
def test_url_expiry(provider: Provider, minted_at: float, expires: int) -> None:
    (task,) = unlimited().create_tasks(TaskSpec(provider, duration_s=10, url_ttl_s=60), T0)
    assert task.url_expiry(T0.wall + minted_at) == T0.wall + expires


@pytest.mark.parametrize(
    ("provider", "expires", "offset", "refusal"),
    [
        # An int is seconds after T0; a string goes into the URL as it is.
        ("minimax", f"+{int(T0.wall) + 70}", 20, "Invalid argument: expires"),
        ("minimax", None, 20, "Invalid argument: expires"),
        ("minimax", "1" * 13, 20, "Invalid argument: expires"),
        ("minimax", 70, 20, None),
        ("minimax", 70, 70, None),  # valid through its last second
        ("minimax", 70, 70.5, "Request has expired"),
        ("minimax", 80, 20, None),  # minted by a retrieve at 20
        ("minimax", 81, 20, "The request signature we calculated does not match"),
        ("jimmy", 70, 20, None),
        ("jimmy", 69, 20, None),  # an earlier expiry only dies sooner
        ("jimmy", 71, 20, "The request signature we calculated does not match"),
        ("jimmy", 70, 71, "Request has expired"),
    ],
)
def test_url_refusal(
    provider: Provider, expires: int | str | None, offset: float, refusal: str | None
) -> None:
    (task,) = unlimited().create_tasks(TaskSpec(provider, duration_s=10, url_ttl_s=60), T0)
    stamp = str(int(T0.wall) + expires) if isinstance(expires, int) else expires
    got = task.url_refusal(stamp, T0.wall + offset)
    if refusal is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(refusal)


@pytest.mark.parametrize(
    ("failed", "cut", "faults"),
    [
        (0, 0, [None, None]),
        (2, 0, ["unavailable", "unavailable", None]),
        (0, 1, ["cut", None]),
        (1, 2, ["unavailable", "cut", "cut", None, None]),
    ],
)
def test_download_faults_come_first_in_order(
    failed: int, cut: int, faults: list[str | None]
) -> None:
    spec = TaskSpec("jimmy", failed_downloads=failed, cut_downloads=cut)
    (task,) = unlimited().create_tasks(spec, T0)
    seen = []
    for _ in faults:
        task.downloads += 1  # as the route counts a download before asking
        seen.append(task.download_fault())
    assert seen == faults


def test_observe_counts_polls_and_the_first_poll_that_saw_the_end() -> None:
    sandbox = unlimited()
    (task,) = sandbox.create_tasks(TaskSpec("minimax", duration_s=2), T0)
    for offset in (0.5, 1.5, 2.25, 3.0):
        sandbox.observe(task, at(offset))
    assert task.polls == 4
    assert task.first_done_poll_at == T0.wall + 2.25


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        (TaskSpec("minimax", outcome="error"), 2013, "invalid params"),
        (TaskSpec("jimmy", outcome="error"), 20002, "invalid params"),
        (TaskSpec("jimmy", outcome="error", error_code=-1, error_message="boom"), -1, "boom"),
        (TaskSpec("minimax", outcome="error", error_code=1000), 1000, "invalid params"),
        (TaskSpec("jimmy", outcome="failed"), None, DEFAULT_FAILURE_MESSAGE),
        (TaskSpec("jimmy", outcome="failed", error_message="no credit"), None, "no credit"),
        (TaskSpec("jimmy", error_code=5, error_message="ignored"), None, None),
    ],
)
def test_scripted_errors_get_defaults(spec: TaskSpec, code: int | None, message: str) -> None:
    (task,) = unlimited().create_tasks(spec, T0)
    assert (task.error_code, task.error_message) == (code, message)


# --- task creation ----------------------------------------------------------------------------


def test_fresh_ids_look_like_the_providers() -> None:
    sandbox = unlimited()
    minimax = sandbox.create_tasks(TaskSpec("minimax"), T0, count=200)
    jimmy = sandbox.create_tasks(TaskSpec("jimmy", model="clone"), T0, count=200)
    assert all(re.fullmatch(r"[1-9]\d{13}", t.id) for t in minimax)
    assert len({t.file_id for t in minimax}) == 200
    assert all(sandbox.tasks.by_file(t.file_id or 0) is t for t in minimax)
    uuid4 = r"audio_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert all(re.fullmatch(uuid4, t.id) for t in jimmy)
    assert all(re.fullmatch(r"model_\d{9}", t.model_id or "") for t in jimmy)
    assert len(sandbox.tasks) == 400


def test_a_seed_repeats_ids_and_random_choices_even_after_reset() -> None:
    def run(sandbox: Sandbox) -> list[tuple[str, str, bool]]:
        tasks = sandbox.create_tasks(TaskSpec("minimax"), T0, count=5)
        tasks += sandbox.create_tasks(TaskSpec("jimmy"), T0, count=5)
        return [(t.id, t.status_case, t.code_as_string) for t in tasks]

    first = Sandbox(SandboxConfig(seed=42))
    baseline = run(first)
    assert run(Sandbox(SandboxConfig(seed=42))) == baseline
    first.reset()
    assert run(first) == baseline
    assert run(Sandbox(SandboxConfig(seed=43))) != baseline


def test_unscripted_casing_and_code_type_vary_per_task() -> None:
    sandbox = unlimited(seed=3)
    minimax = sandbox.create_tasks(TaskSpec("minimax"), T0, count=100)
    jimmy = sandbox.create_tasks(TaskSpec("jimmy"), T0, count=100)
    assert {t.status_case for t in minimax} == {"title", "lower"}
    assert {t.code_as_string for t in jimmy} == {True, False}
    scripted = sandbox.create_tasks(TaskSpec("minimax", status_case="lower"), T0, count=50)
    assert {t.status_case for t in scripted} == {"lower"}


def test_explicit_ids_and_their_errors() -> None:
    sandbox = unlimited()
    (task,) = sandbox.create_tasks(TaskSpec("jimmy", id="audio_mine"), T0)
    assert sandbox.tasks.get("jimmy", "audio_mine") is task
    assert sandbox.tasks.get("minimax", "audio_mine") is None
    with pytest.raises(DuplicateTask):
        sandbox.create_tasks(TaskSpec("jimmy", id="audio_mine"), T0)
    with pytest.raises(SandboxError, match="single task"):
        sandbox.create_tasks(TaskSpec("jimmy", id="audio_two"), T0, count=2)
    with pytest.raises(SandboxError, match="not a Jimmy task state"):
        sandbox.create_tasks(TaskSpec("jimmy", outcome="expired"), T0)
    assert len(sandbox.tasks) == 1


def test_the_task_cap_refuses_a_whole_batch() -> None:
    sandbox = Sandbox(SandboxConfig(max_tasks=10))
    sandbox.create_tasks(TaskSpec("minimax"), T0, count=8)
    with pytest.raises(TooManyTasks, match="at most 10"):
        sandbox.create_tasks(TaskSpec("jimmy"), T0, count=3)
    assert len(sandbox.tasks) == 8
    sandbox.create_tasks(TaskSpec("jimmy"), T0, count=2)
    assert len(sandbox.tasks) == 10


# --- rate limiting and counting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "window"),
    [
        (0, None),
        (-1, None),
        (10, (10, 1.0)),
        (2.5, (2, 1.0)),
        (1, (1, 1.0)),
        (0.5, (1, 2.0)),
        (0.2, (1, 5.0)),
    ],
)
def test_rate_window(rate: float, window: tuple[int, float] | None) -> None:
    assert rate_window(rate) == window


@pytest.mark.parametrize(
    ("times", "limit", "window_s", "admitted"),
    [
        ([0, 0.1, 0.2, 0.99, 1.0, 1.1], 2, 1.0, [1, 1, 0, 0, 1, 1]),
        ([0, 0, 0, 0], 3, 1.0, [1, 1, 1, 0]),
        ([0, 0.5, 1.0, 1.5, 2.0], 1, 1.0, [1, 0, 1, 0, 1]),
        ([0, 1.9, 2.0, 3.9], 1, 2.0, [1, 0, 1, 0]),
        # Rejected requests do not hold the window open.
        ([0, 0.9, 0.95, 1.0], 1, 1.0, [1, 0, 0, 1]),
    ],
)
def test_admit_in_window(
    times: list[float], limit: int, window_s: float, admitted: list[int]
) -> None:
    accepted: deque[float] = deque()
    assert [int(admit_in_window(accepted, t, limit, window_s)) for t in times] == admitted


@pytest.mark.parametrize(
    ("times", "most"),
    [
        ([], 0),
        ([5.0], 1),
        ([0, 0.5, 0.999], 3),
        ([0, 1.0], 1),  # windows are half-open: [0, 1) does not hold 1.0
        ([0, 0.5, 1.0, 1.4], 3),
        ([1.4, 0, 1.0, 0.5], 3),  # order of arrival does not matter
        ([0, 0, 0, 0, 0], 5),
        ([0, 2, 4, 6], 1),
    ],
)
def test_max_in_window(times: list[float], most: int) -> None:
    assert max_in_window(times) == most


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_admitted_requests_never_exceed_the_limit_in_any_window(limit: int) -> None:
    rng = random.Random(limit)
    arrivals = sorted(rng.uniform(0, 20) for _ in range(2000))
    accepted: deque[float] = deque()
    admitted = [t for t in arrivals if admit_in_window(accepted, t, limit, 1.0)]
    assert max_in_window(admitted) == limit
    assert max_in_window(arrivals) > limit


@pytest.mark.parametrize(
    ("times", "count", "expected"),
    [
        ([0.0, 0.5, 1.2, 1.3], 3, 0.8),
        ([1.3, 0.0, 1.2, 0.5], 3, 0.8),  # order of arrival does not matter
        ([0.0, 0.5], 3, None),  # never that many
        ([0.0, 0.4, 0.9], 1, 0.0),
    ],
)
def test_shortest_span(times: list[float], count: int, expected: float | None) -> None:
    assert shortest_span(times, count) == (None if expected is None else pytest.approx(expected))


def test_traffic_counts_per_key_and_per_second() -> None:
    traffic = Traffic(max_timestamps=100)
    for offset in (0.0, 0.2, 0.7, 1.1):
        traffic.record("minimax", "k1", at(offset))
    traffic.record("minimax", None, at(0))
    traffic.record("jimmy", "k1", at(0))
    stats = traffic.stats({"minimax": 2, "jimmy": 0})
    k1 = stats["minimax"]["k1"]
    assert k1.requests == 4
    assert k1.max_in_any_1s_window == 3
    assert k1.shortest_span_over_limit_s == pytest.approx(0.7)  # 3 requests over 2/s
    assert stats["jimmy"]["k1"].shortest_span_over_limit_s is None  # unlimited
    assert k1.per_second == {"1800000000": 3, "1800000001": 1}
    assert k1.timestamps_dropped == 0
    assert stats["minimax"][NO_KEY].requests == 1
    assert stats["jimmy"]["k1"].requests == 1


def test_traffic_stays_bounded() -> None:
    traffic = Traffic(max_timestamps=3, max_keys=2)
    for i in range(5):
        traffic.record("jimmy", "a" * 1000, at(i / 10))
    traffic.record("jimmy", "b", at(0))
    traffic.record("jimmy", "c", at(0))
    traffic.record("jimmy", "d", at(0))
    stats = traffic.stats({"minimax": 10, "jimmy": 5})["jimmy"]
    assert set(stats) == {"a" * 200, "b", OTHER_KEYS}
    assert stats["a" * 200].requests == 5
    assert stats["a" * 200].timestamps_dropped == 2
    assert stats[OTHER_KEYS].requests == 2


def test_admit_counts_everything_and_limits_per_key() -> None:
    sandbox = Sandbox(SandboxConfig(minimax_rate=2, jimmy_rate=0))
    answers = [sandbox.admit("minimax", "k1", at(0.1 * i)).rate_limited for i in range(4)]
    assert answers == [False, False, True, True]
    assert not sandbox.admit("minimax", "k2", at(0.3)).rate_limited
    assert not sandbox.admit("minimax", "k1", at(1.0)).rate_limited
    assert not any(sandbox.admit("jimmy", "k1", at(0)).rate_limited for _ in range(50))
    k1 = sandbox.traffic.stats(sandbox.rates)["minimax"]["k1"]
    assert (k1.requests, k1.rejected_rate_limited, k1.max_in_any_1s_window) == (5, 2, 4)


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "latency_s", "expected"),
    [
        ("latency", None, 1.0),
        ("latency", 0.25, 0.25),
        ("timeout", None, 30.0),
        ("timeout", 500.0, 120.0),
        ("http_500", 5.0, 0.0),
        ("rate_limit", None, 0.0),
    ],
)
def test_fault_latency(kind: FaultKind, latency_s: float | None, expected: float) -> None:
    assert fault_latency(kind, latency_s) == expected


def never() -> float:
    return 0.999999


def always() -> float:
    return 0.0


def test_fault_filters_by_provider_and_first_hit_wins() -> None:
    book = FaultBook()
    jimmy_only = book.add(FaultSpec("http_500", provider="jimmy"), T0)
    both = book.add(FaultSpec("html"), T0)
    assert book.pick("minimax", T0, always) is both
    assert book.pick("jimmy", T0, always) is jimmy_only
    assert (jimmy_only.injected, both.injected) == (1, 1)


@pytest.mark.parametrize(("probability", "fires"), [(0.0, False), (0.5, False), (1.0, True)])
def test_fault_probability(probability: float, fires: bool) -> None:
    book = FaultBook()
    book.add(FaultSpec("html", probability=probability), T0)
    assert (book.pick("jimmy", T0, never) is not None) is fires


def test_fault_count_and_duration_run_out() -> None:
    book = FaultBook()
    counted = book.add(FaultSpec("http_503", provider="minimax", count=2), T0)
    timed = book.add(FaultSpec("html", provider="jimmy", duration_s=5), T0)
    picks = [book.pick("minimax", T0, always) for _ in range(3)]
    assert picks == [counted, counted, None]
    assert book.pick("jimmy", at(4.9), always) is timed
    assert book.pick("jimmy", at(5.0), always) is None
    assert book.live(at(5.0)) == []
    assert timed.expires_at == T0.wall + 5


def test_fault_remove_and_clear() -> None:
    book = FaultBook()
    first = book.add(FaultSpec("html"), T0)
    book.add(FaultSpec("http_500"), T0)
    assert book.remove(first.id)
    assert not book.remove(first.id)
    assert [f.kind for f in book.live(T0)] == ["http_500"]
    book.clear()
    assert book.live(T0) == []


def test_admit_hands_out_faults_but_not_to_rate_limited_requests() -> None:
    sandbox = Sandbox(SandboxConfig(minimax_rate=1))
    sandbox.faults.add(FaultSpec("wrong_types"), T0)
    first = sandbox.admit("minimax", "k", T0)
    second = sandbox.admit("minimax", "k", T0)
    assert first.fault is not None
    assert first.fault.kind == "wrong_types"
    assert second.rate_limited
    assert second.fault is None
    stats = sandbox.traffic.stats(sandbox.rates)["minimax"]["k"]
    assert (stats.faults_injected, stats.rejected_rate_limited) == (1, 1)


def test_reset_forgets_tasks_faults_and_counts_but_keeps_rates() -> None:
    sandbox = Sandbox(SandboxConfig(minimax_rate=3))
    sandbox.rates["jimmy"] = 7
    sandbox.create_tasks(TaskSpec("minimax"), T0)
    sandbox.faults.add(FaultSpec("html"), T0)
    sandbox.admit("minimax", "k", T0)
    sandbox.reset()
    assert len(sandbox.tasks) == 0
    assert sandbox.faults.live(T0) == []
    assert sandbox.traffic.stats(sandbox.rates) == {p: {} for p in PROVIDERS}
    assert sandbox.rates == {**DEFAULT_RATES, "minimax": 3, "jimmy": 7}
