"""Adaptive poll scheduling (issue 5): how soon pollhook notices that a task finished, and
how many polls it spends per task, with the `adaptive` scheduler against `fixed` polling
(every 5 s, the providers' advice) and plain exponential `backoff`, plus `adaptive` given
each task's `size_hint`; below and above the point where the shared budget saturates.

Run from the repository root:

    python -m bench.adaptive_schedule [--quick] [--json PATH]
    #   --inflight 20,100,150  --seconds 90  --factor 10  --budget 10
    #   --schedulers fixed,backoff,adaptive,hints  --hit-chance Q  --lateness S  --cpu-hog N

**Time is compressed** by `--factor` (default 10): every duration and interval given to the
sandbox and to pollhook is divided by it and every rate multiplied by it, so a 15-minute
workload runs in 90 s. Everything printed is converted back to real seconds (and rates to
real requests per second), except where a line says "compressed". Engine timings that are
not per-provider settings are compressed too (`ENGINE__TICK_S` 1 s, `CLAIM_HORIZON_S` 2 s,
`RATE_RECOVERY_S` 60 s, `FORECAST_WINDOW_S` 60 s, `BACKLOG_DRAIN_S` 120 s), but fixed costs
are not: a poll's round trips, the apply transaction and the file retrieve take the same
milliseconds, which count 10x in real terms (5 ms compressed reads as 50 ms), and the
budget's send slack (8 ms at any rate of 1/s or more) stays 8 ms.

Setup: a throwaway embedded Postgres, the sandbox (`pollhook sandbox --minimax-rate
budget x factor`, which answers 1002 past that many requests in any sliding 1-second window),
and per run a fresh `pollhook api` and one `pollhook worker` subprocess, both with the run's
MiniMax settings (real units, before compression):

    rate_limit_per_s 10; fixed: schedule=fixed, first poll 5 s, min = max interval 5 s;
    backoff / adaptive: first poll 1 s, min interval 1 s, max 60 s (backoff grows x1.5);
    adaptive: poll_hit_chance and poll_lateness_s defaults (0.2, 0.5 s real: 0.05 s given to
    the compressed run), ENGINE__MODEL_REFRESH_S 0.5 (compressed).

Workload (real units): per task a text size ~ lognormal(median 1000 chars, sigma 0.5), one task
in ten 10x longer; duration = 20 s x size / 1000 x lognormal(0, 0.15) noise. The median is
~21 s, the mean ~44 s, the longest tasks several minutes. Arrivals are Poisson at N / mean
duration, so about N tasks are in flight. Each arrival creates a scripted sandbox task
(MiniMax, outcome success) and registers it through `POST /v1/tasks` (with
`size_hint = size` in the `hints` variant). Every scheduler of a scenario gets the same
seeded workload.

Per run: the database is emptied (tasks and everything hanging off them, provider_state,
and the learned completion tables), the sandbox reset, then arrivals run for `--seconds`
(compressed) and go on, unmeasured, until every measured task is detected (at most
`--drain-max`, 300 s real, more), so the load stays steady throughout. **Measured tasks** are those
registered after the warm-up (the first 25 % of the run, so the adaptive model has learned)
whose upstream finish lies at least one max interval (`TAIL_GRACE_S`) before the end of the
arrival window. The set depends only on the workload, so it is the same for every scheduler.

Measured per run:

* detection delay: pollhook's `completed_at` (database clock) minus the upstream's done time
  (sandbox `created_at + duration_s`, same machine's clock); p50 / p90 / p99;
* polls per task: `tasks.polls` (status polls that reached the upstream);
* the longest a task went unqueried (sandbox `longest_gap_s`: creation to first query, then
  between consecutive queries);
* budget: requests per second at the sandbox (status queries and file retrieves), the most
  in any sliding 1-second window (compressed, against the compressed limit) and 1002
  answers; the target is no violation;
* the `completion` and `saturation` figures of `GET /v1/providers` at the end of the
  arrival window, when the API has them.

`--cpu-hog N` runs N processes that only burn CPU beside everything (the starved machine of
issue 13's "under CPU pressure" target: >= 90 % of the budget used, every task detected).

This is a benchmark, not a test: it prints a table with ratios against `fixed` and the
issue's targets, and exits non-zero only when a run broke (a process failed, registrations
failed, a measured task was never detected or a budget violation occurred).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.config import ProviderSettings
from app.core.embedded import EmbeddedPostgres
from bench._support import (
    TENANT,
    CpuProbe,
    Sandbox,
    begin,
    connect,
    count_warnings,
    cpu_hog,
    free_port,
    int_list,
    percentile,
    poll_metrics,
    pollhook_env,
    run_benchmark,
    start_api,
    start_worker,
    stop_process,
)

# --- the scenario, in real units ----------------------------------------------------------------

BUDGET_PER_S = 10.0
FIXED_INTERVAL_S = 5.0
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 60.0
FIRST_POLL_S = {"fixed": 5.0, "backoff": 1.0, "adaptive": 1.0}
# The tail of the arrival window whose finishing tasks are not measured: one max interval.
TAIL_GRACE_S = 60.0
# After the arrival window, wait at most this long for the measured tasks to be detected.
DRAIN_MAX_S = 300.0
QUICK_DRAIN_MAX_S = 60.0
WARMUP_SHARE = 0.25
MODEL_REFRESH_S = 0.5  # compressed, as the issue asks

MEDIAN_SIZE = 1000.0
SIZE_SIGMA = 0.5
LONG_SHARE = 0.10
LONG_FACTOR = 10.0
SECONDS_PER_1000 = 20.0
NOISE_SIGMA = 0.15
MEAN_DURATION_S = (
    SECONDS_PER_1000
    * (MEDIAN_SIZE / 1000)
    * (1 - LONG_SHARE + LONG_SHARE * LONG_FACTOR)
    * math.exp(SIZE_SIGMA**2 / 2)
    * math.exp(NOISE_SIGMA**2 / 2)
)

# Targets of issue 5, against fixed polling in the same scenario.
SATURATED_P50_MAX = 0.5  # adaptive p50 <= 0.5 x fixed, polls/task <= fixed
UNSATURATED_POLLS_MAX = 0.5  # adaptive polls/task <= 0.5 x fixed, p50 <= fixed

CHECK_EVERY_S = 0.25
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Variant:
    name: str
    schedule: str  # fixed | backoff | adaptive
    hints: bool = False

    @property
    def first_poll_s(self) -> float:
        return FIRST_POLL_S[self.schedule]

    @property
    def intervals_s(self) -> tuple[float, float]:
        if self.schedule == "fixed":
            return FIXED_INTERVAL_S, FIXED_INTERVAL_S
        return MIN_INTERVAL_S, MAX_INTERVAL_S


VARIANTS = {
    "fixed": Variant("fixed", "fixed"),
    "backoff": Variant("backoff", "backoff"),
    "adaptive": Variant("adaptive", "adaptive"),
    "hints": Variant("adaptive+hints", "adaptive", hints=True),
}


@dataclass
class Options:
    inflight: list[int]
    seconds: float  # compressed
    drain_max_s: float  # real
    factor: float
    budget: float  # real requests/s
    variants: list[Variant]
    hit_chance: float | None  # poll_hit_chance for the adaptive variants; None: the default
    lateness_s: float | None  # poll_lateness_s (real seconds) likewise
    seed: int
    json_path: Path | None
    cpu_hog: int


# --- the workload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at_s: float  # compressed, from the start of the run
    size: int  # characters
    duration_s: float  # compressed


def workload(inflight: int, horizon_s: float, factor: float, seed: int) -> list[Arrival]:
    """Poisson arrivals over `horizon_s` (compressed) keeping ~`inflight` tasks running."""
    rng = random.Random(seed)
    rate = inflight / MEAN_DURATION_S * factor
    arrivals: list[Arrival] = []
    at = rng.expovariate(rate)
    while at < horizon_s:
        size = rng.lognormvariate(math.log(MEDIAN_SIZE), SIZE_SIGMA)
        if rng.random() < LONG_SHARE:
            size *= LONG_FACTOR
        real_s = SECONDS_PER_1000 * size / 1000 * rng.lognormvariate(0.0, NOISE_SIGMA)
        arrivals.append(Arrival(at, max(1, round(size)), real_s / factor))
        at += rng.expovariate(rate)
    return arrivals


def measured(arrivals: Sequence[Arrival], seconds: float, factor: float) -> set[int]:
    """Indexes of the arrivals whose detection is measured (see the module docstring)."""
    start = seconds * WARMUP_SHARE
    end = seconds - TAIL_GRACE_S / factor
    return {i for i, a in enumerate(arrivals) if a.at_s >= start and a.at_s + a.duration_s <= end}


def code_digest() -> str:
    """A digest of pollhook's source as the next subprocess will load it: other people edit
    the tree while a long run goes on, and runs on different code must not be compared."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1] / "app"
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# --- processes ----------------------------------------------------------------------------------


def minimax_settings(
    variant: Variant,
    *,
    budget: float = BUDGET_PER_S,
    hit_chance: float | None = None,
    lateness_s: float | None = None,
) -> dict[str, object]:
    """The MiniMax instance's settings for `variant`, in real units; `hit_chance` and
    `lateness_s` (None: the engine's defaults) apply to the adaptive schedule only."""
    low, high = variant.intervals_s
    settings: dict[str, object] = {
        "rate_limit_per_s": budget,
        "first_poll_delay_s": variant.first_poll_s,
        "min_poll_interval_s": low,
        "max_poll_interval_s": high,
        "schedule": variant.schedule,
    }
    if variant.schedule == "adaptive":
        if hit_chance is not None:
            settings["poll_hit_chance"] = hit_chance
        settings["poll_lateness_s"] = (
            lateness_s
            if lateness_s is not None
            else ProviderSettings.model_fields["poll_lateness_s"].default
        )
    return settings


def compressed(settings: dict[str, object], factor: float) -> dict[str, object]:
    """Durations (`*_s`) divided by `factor`, rates (`*_per_s`) multiplied by it."""
    out: dict[str, object] = {}
    for key, value in settings.items():
        if isinstance(value, int | float) and key.endswith("_per_s"):
            value = value * factor
        elif isinstance(value, int | float) and key.endswith("_s"):
            value = value / factor
        out[key] = value
    return out


def pollhook_settings(
    server: EmbeddedPostgres, sandbox: Sandbox, options: Options, variant: Variant, api_key: str
) -> dict[str, str]:
    minimax = minimax_settings(
        variant, budget=options.budget, hit_chance=options.hit_chance, lateness_s=options.lateness_s
    )
    factor = options.factor
    return pollhook_env(
        server,
        sandbox=sandbox,
        providers={"minimax": compressed(minimax, factor)},
        api_keys=f"{TENANT}:{api_key}",
        admin_keys=f"bench:{operator_key(api_key)}",
        api_rate_limit_per_s=0,
        # The engine's own durations, and the forecast's (their defaults), compressed too;
        # the forecast refreshes every MODEL_REFRESH_S, compressed already.
        engine__tick_s=1.0 / factor,
        engine__claim_horizon_s=2.0 / factor,
        engine__rate_recovery_s=60.0 / factor,
        engine__forecast_window_s=60.0 / factor,
        engine__backlog_drain_s=120.0 / factor,
        engine__model_refresh_s=MODEL_REFRESH_S,
    )


async def empty_database(conn: asyncpg.Connection) -> list[str]:
    """Drop every task (events and deliveries go with them), the shared budget rows and
    whatever the adaptive scheduler learned; returns the learned tables found."""
    learned = [
        str(r["tablename"])
        for r in await conn.fetch(
            "SELECT tablename FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename LIKE 'completion%' ORDER BY 1"
        )
    ]
    tables = ", ".join(["tasks", *(f'"{name}"' for name in learned)])
    await conn.execute(f"TRUNCATE {tables} CASCADE")
    await conn.execute("DELETE FROM provider_state")
    return learned


# --- one run ------------------------------------------------------------------------------------


@dataclass
class Registered:
    index: int
    external_id: str
    created_at: float  # sandbox wall clock
    ready_at: float


@dataclass
class Generator:
    """Fires each arrival at its time: a sandbox task, then its registration with pollhook."""

    arrivals: list[Arrival]
    sandbox: Sandbox
    api: httpx.AsyncClient
    hints: bool
    registered: dict[str, Registered] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, started: float, stop: asyncio.Event) -> None:
        for index, arrival in enumerate(self.arrivals):
            delay = started + arrival.at_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                break
            self.lateness.append(time.monotonic() - started - arrival.at_s)
            task = asyncio.create_task(self._one(index, arrival))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    async def _one(self, index: int, arrival: Arrival) -> None:
        try:
            created = await self.sandbox.http.post(
                "/_sandbox/tasks",
                json={
                    "provider": "minimax",
                    "duration_s": arrival.duration_s,
                    "outcome": "success",
                    "status_case": "title",
                },
            )
            created.raise_for_status()
            body = created.json()
            external_id = str(body["id"])
            payload: dict[str, Any] = {"provider": "minimax", "external_id": external_id}
            if self.hints:
                payload["size_hint"] = arrival.size
            response = await self.api.post("/v1/tasks", json=payload)
        except httpx.HTTPError as exc:
            self.errors.append(f"arrival {index}: {type(exc).__name__}: {exc}")
            return
        if response.status_code != 201:
            self.errors.append(
                f"arrival {index}: HTTP {response.status_code} {response.text[:200]}"
            )
            return
        ready_at = float(body["ready_at"])
        self.registered[external_id] = Registered(
            index, external_id, ready_at - arrival.duration_s, ready_at
        )


@dataclass
class RunResult:
    variant: str
    inflight: int
    arrivals: int
    registered: int
    registration_errors: int
    measured: int
    detected: int
    not_succeeded: int
    # Real seconds from here on.
    delay_p50_s: float
    delay_p90_s: float
    delay_p99_s: float
    delay_max_s: float
    seen_p50_s: float  # the first poll that saw the end, before the file retrieve and apply
    polls_per_task: float
    polls_per_task_all: float  # every completed task, warm-up and tail included
    longest_gap_p50_s: float
    longest_gap_p99_s: float
    longest_gap_max_s: float
    # Over every registered task, and for those pollhook still tracked at the end also the
    # time since their last query (or creation): the longest any task went unqueried.
    gap_max_all_s: float
    unqueried_at_end: int  # tracked tasks never queried, registered over TAIL_GRACE_S ago
    worst_gaps: list[dict[str, Any]]  # the tasks behind gap_max_all_s, for a closer look
    requests: int
    # (wall-clock second, requests) at the upstream, compressed: where the budget went idle.
    requests_per_second: list[tuple[int, int]]
    requests_per_s: float  # real
    budget_share: float
    max_in_any_1s_window: int  # compressed window, against the compressed limit
    limit_per_1s_window: int
    rejected_1002: int
    arrival_window_s: float  # real
    run_s: float  # real, to the last check
    generator_lateness_p99_ms: float  # compressed
    load_average_1m: float
    providers_at_end: list[dict[str, Any]]
    cpu_s: dict[str, float]
    poll_outcomes: dict[str, float]  # the worker's own counters (its /metrics)
    code_digest: str  # of app/**/*.py when the run's processes started
    worker_exit_code: int | None
    api_exit_code: int | None
    worker_warnings: dict[str, int]

    @property
    def broken(self) -> list[str]:
        problems: list[str] = []
        if self.registration_errors:
            problems.append(f"{self.registration_errors} registrations failed")
        if self.detected < self.measured:
            problems.append(f"{self.measured - self.detected} measured tasks never detected")
        if self.rejected_1002 or self.max_in_any_1s_window > self.limit_per_1s_window:
            problems.append("budget violated")
        if self.worker_exit_code not in (0, None) or self.api_exit_code not in (0, None):
            problems.append(f"exit codes worker {self.worker_exit_code}, api {self.api_exit_code}")
        return problems


def minimax_outcomes(metrics: dict[str, float]) -> dict[str, float]:
    """The minimax instance's poll outcomes, "(slots reserved)" and "(slots missed)", from
    `poll_metrics`."""
    found = {
        key.removeprefix("polls minimax "): n
        for key, n in metrics.items()
        if key.startswith("polls minimax ")
    }
    if "slots minimax" in metrics:
        found["(slots reserved)"] = metrics["slots minimax"]
    if "missed minimax" in metrics:
        found["(slots missed)"] = metrics["missed minimax"]
    return found


def operator_key(api_key: str) -> str:
    """The run's operator key: the budget and saturation figures are for operators."""
    return f"{api_key}-operator"


async def providers_view(api: httpx.AsyncClient, api_key: str) -> list[dict[str, Any]]:
    """The minimax item of GET /v1/providers, trimmed to the scheduling figures."""
    try:
        response = await api.get(
            "/v1/providers", headers={"Authorization": f"Bearer {operator_key(api_key)}"}
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return [{"error": f"{type(exc).__name__}: {exc}"}]
    keep = ("name", "effective_rate_per_s", "due_backlog", "completion", "saturation")
    return [
        {k: item.get(k) for k in keep}
        for item in response.json().get("items", [])
        if item.get("name") == "minimax"
    ]


async def wait_detected(
    conn: asyncpg.Connection,
    generator: Generator,
    measured_ids: set[int],
    deadline: float,
    worker: asyncio.subprocess.Process,
) -> None:
    """After the arrival window: until every measured task that registered is completed."""
    while time.monotonic() < deadline and worker.returncode is None:
        ids = [r.external_id for r in generator.registered.values() if r.index in measured_ids]
        done = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE external_id = ANY($1::text[]) "
            "AND completed_at IS NOT NULL",
            ids,
        )
        if done >= len(ids):
            return
        await asyncio.sleep(CHECK_EVERY_S)


async def report_progress(
    server: EmbeddedPostgres, sandbox: Sandbox, started: float, factor: float, stop: asyncio.Event
) -> None:
    conn = await connect(server)  # its own: the run's connection is busy meanwhile
    try:
        await _report_progress(conn, sandbox, started, factor, stop)
    finally:
        await conn.close()


async def _report_progress(
    conn: asyncpg.Connection, sandbox: Sandbox, started: float, factor: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=15.0)
        if stop.is_set():
            return
        row = await conn.fetchrow(
            "SELECT count(*) AS total, count(completed_at) AS done, "
            "coalesce(sum(polls), 0) AS polls FROM tasks"
        )
        stats = await sandbox.key_stats()
        elapsed = time.monotonic() - started
        print(
            f"    {elapsed:5.0f} s ({elapsed * factor / 60:.1f} min real): {row['total']} tasks, "
            f"{row['total'] - row['done']} active, {row['polls']} polls, "
            f"{stats['requests']} requests, {stats['rejected_rate_limited']} x 1002",
            flush=True,
        )


async def one_run(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    workdir: Path,
    options: Options,
    variant: Variant,
    inflight: int,
    arrivals: list[Arrival],
) -> RunResult:
    factor = options.factor
    measured_ids = measured(arrivals, options.seconds, factor)
    await sandbox.reset()
    await empty_database(conn)
    load = os.getloadavg()[0]
    digest = code_digest()
    api_key = secrets.token_hex(16)
    port = free_port()
    env = pollhook_settings(server, sandbox, options, variant, api_key)
    metrics_port = free_port()
    worker_env = {**env, "POLLHOOK_METRICS_PORT": str(metrics_port)}
    tag = f"{variant.name}-{inflight}"
    worker_log_path = workdir / f"worker-{tag}.log"
    async with contextlib.AsyncExitStack() as stack:
        worker_log = stack.enter_context(worker_log_path.open("w"))
        api_log = stack.enter_context((workdir / f"api-{tag}.log").open("w"))
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {api_key}"},
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
                timeout=REQUEST_TIMEOUT_S,
            )
        )
        api_process = await start_api(env, port, api_log)
        stack.push_async_callback(stop_process, api_process, "api")
        worker = await start_worker(conn, worker_env, worker_log)
        stack.push_async_callback(stop_process, worker, "worker")
        cpu = CpuProbe(
            server.server.get_pid(),
            {"worker": worker.pid, "api": api_process.pid, "sandbox": sandbox.process.pid},
        )
        cpu_before = cpu.sample()
        bench_before = time.process_time()
        generator = Generator(arrivals, sandbox, api, variant.hints)
        stop_arrivals = asyncio.Event()
        stop_progress = asyncio.Event()
        started = time.monotonic()
        generating = asyncio.create_task(generator.run(started, stop_arrivals))
        progress = asyncio.create_task(
            report_progress(server, sandbox, started, factor, stop_progress)
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(generating), timeout=options.seconds)
        providers = await providers_view(api, api_key)
        await wait_detected(
            conn,
            generator,
            measured_ids,
            started + options.seconds + options.drain_max_s / factor,
            worker,
        )
        run_s = time.monotonic() - started
        metrics = await poll_metrics(metrics_port)
        stop_arrivals.set()
        stop_progress.set()
        await asyncio.gather(generating, progress)
        cpu_s = CpuProbe.delta(cpu_before, cpu.sample())
        cpu_s["bench"] = time.process_time() - bench_before
        stats = await sandbox.key_stats()
    rows = {
        str(r["external_id"]): r
        for r in await conn.fetch(
            "SELECT external_id, status, polls, extract(epoch FROM completed_at) AS completed "
            "FROM tasks"
        )
    }
    upstream = await sandbox.tasks(sorted(generator.registered))
    return analyse(
        variant=variant,
        inflight=inflight,
        options=options,
        arrivals=arrivals,
        measured_ids=measured_ids,
        generator=generator,
        rows=rows,
        upstream=upstream,
        stats=stats,
        end_wall=time.time(),
        run_s=run_s,
        load=load,
        providers=providers,
        cpu_s=cpu_s,
        outcomes=minimax_outcomes(metrics),
        digest=digest,
        exit_codes=(worker.returncode, api_process.returncode),
        warnings=count_warnings([worker_log_path]),
    )


def worst_gap(
    gap: float, task: dict[str, Any], rows: dict[str, Any], end_wall: float, factor: float
) -> dict[str, Any]:
    """One task's query history in real seconds from its creation."""
    created = float(task["created_at"])
    row = rows.get(str(task["id"]))
    return {
        "gap_s": round(gap, 1),
        "duration_s": round(float(task["duration_s"]) * factor, 1),
        "queries_at_s": [round((q - created) * factor, 1) for q in task["queries"]],
        "polls": task["polls"],
        "age_at_end_s": round((end_wall - created) * factor, 1),
        "status": None if row is None else row["status"],
    }


def analyse(
    *,
    variant: Variant,
    inflight: int,
    options: Options,
    arrivals: list[Arrival],
    measured_ids: set[int],
    generator: Generator,
    rows: dict[str, Any],
    upstream: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    end_wall: float,
    run_s: float,
    load: float,
    providers: list[dict[str, Any]],
    cpu_s: dict[str, float],
    outcomes: dict[str, float],
    digest: str,
    exit_codes: tuple[int | None, int | None],
    warnings: dict[str, int],
) -> RunResult:
    factor = options.factor
    delays: list[float] = []
    seen: list[float] = []
    polls: list[int] = []
    gaps: list[float] = []
    measured_count = detected = not_succeeded = 0
    for external_id, registered in generator.registered.items():
        if registered.index not in measured_ids:
            continue
        measured_count += 1
        row = rows.get(external_id)
        task = upstream[external_id]
        if task["longest_gap_s"] is not None:
            gaps.append(float(task["longest_gap_s"]) * factor)
        if row is None or row["completed"] is None:
            continue
        detected += 1
        if row["status"] != "succeeded":
            not_succeeded += 1
        delays.append((float(row["completed"]) - registered.ready_at) * factor)
        if task["first_done_poll_at"] is not None:
            seen.append((float(task["first_done_poll_at"]) - registered.ready_at) * factor)
        polls.append(int(row["polls"]))
    all_polls = [int(r["polls"]) for r in rows.values() if r["completed"] is not None]
    grace = TAIL_GRACE_S / factor
    unqueried = 0
    by_gap: list[tuple[float, dict[str, Any]]] = []
    for external_id, task in upstream.items():
        longest = float(task["longest_gap_s"] or 0.0)
        row = rows.get(external_id)
        if row is not None and row["completed"] is None:
            last = task["last_query_at"] or float(task["created_at"])
            longest = max(longest, end_wall - last)
            if task["polls"] == 0 and end_wall - float(task["created_at"]) > grace:
                unqueried += 1
        by_gap.append((longest * factor, task))
    by_gap.sort(key=lambda item: item[0], reverse=True)
    gap_all = by_gap[0][0] if by_gap else 0.0
    delays.sort()
    seen.sort()
    gaps.sort()
    requests = int(stats["requests"])
    seconds = [int(s) for s in stats["per_second"]]
    span = (max(seconds) - min(seconds) + 1) if seconds else 1
    rate = requests / (span * factor)  # real requests per real second
    return RunResult(
        variant=variant.name,
        inflight=inflight,
        arrivals=len(generator.lateness),
        registered=len(generator.registered),
        registration_errors=len(generator.errors),
        measured=measured_count,
        detected=detected,
        not_succeeded=not_succeeded,
        delay_p50_s=percentile(delays, 50),
        delay_p90_s=percentile(delays, 90),
        delay_p99_s=percentile(delays, 99),
        delay_max_s=delays[-1] if delays else 0.0,
        seen_p50_s=percentile(seen, 50),
        polls_per_task=sum(polls) / len(polls) if polls else 0.0,
        polls_per_task_all=sum(all_polls) / len(all_polls) if all_polls else 0.0,
        longest_gap_p50_s=percentile(gaps, 50),
        longest_gap_p99_s=percentile(gaps, 99),
        longest_gap_max_s=gaps[-1] if gaps else 0.0,
        gap_max_all_s=gap_all,
        worst_gaps=[worst_gap(gap, task, rows, end_wall, factor) for gap, task in by_gap[:5]],
        unqueried_at_end=unqueried,
        requests=requests,
        requests_per_second=sorted((int(k), int(n)) for k, n in stats["per_second"].items()),
        requests_per_s=rate,
        budget_share=rate / options.budget,
        max_in_any_1s_window=int(stats["max_in_any_1s_window"]),
        limit_per_1s_window=int(options.budget * factor),
        rejected_1002=int(stats["rejected_rate_limited"]),
        arrival_window_s=options.seconds * factor,
        run_s=run_s * factor,
        generator_lateness_p99_ms=percentile(sorted(generator.lateness), 99) * 1000,
        load_average_1m=load,
        providers_at_end=providers,
        cpu_s=cpu_s,
        poll_outcomes=outcomes,
        code_digest=digest,
        worker_exit_code=exit_codes[0],
        api_exit_code=exit_codes[1],
        worker_warnings=warnings,
    )


# --- reporting ----------------------------------------------------------------------------------


def saturated(inflight: int, budget: float) -> bool:
    """Whether fixed polling alone asks for more than the budget."""
    return inflight / FIXED_INTERVAL_S > budget


def ratios(results: list[RunResult]) -> dict[tuple[str, int], dict[str, float]]:
    """p50 and polls per task of each run against fixed polling in the same scenario."""
    fixed = {r.inflight: r for r in results if r.variant == "fixed"}
    out: dict[tuple[str, int], dict[str, float]] = {}
    for r in results:
        base = fixed.get(r.inflight)
        if base is None or base.delay_p50_s <= 0 or base.polls_per_task <= 0:
            continue
        out[r.variant, r.inflight] = {
            "p50": r.delay_p50_s / base.delay_p50_s,
            "p99": r.delay_p99_s / base.delay_p99_s if base.delay_p99_s > 0 else math.nan,
            "polls": r.polls_per_task / base.polls_per_task,
        }
    return out


def targets(
    results: list[RunResult], budget: float
) -> list[tuple[str, int, str, float, float, bool]]:
    """(variant, N, what, value, limit, met) for each adaptive run with a fixed baseline."""
    rows: list[tuple[str, int, str, float, float, bool]] = []
    table = ratios(results)
    for r in results:
        if r.variant == "fixed" or not r.variant.startswith("adaptive"):
            continue
        ratio = table.get((r.variant, r.inflight))
        if ratio is None:
            continue
        if saturated(r.inflight, budget):
            limits = {"p50": SATURATED_P50_MAX, "polls": 1.0}
        else:
            limits = {"p50": 1.0, "polls": UNSATURATED_POLLS_MAX}
        for what, limit in limits.items():
            rows.append((r.variant, r.inflight, what, ratio[what], limit, ratio[what] <= limit))
    return rows


def print_results(results: list[RunResult], options: Options) -> None:
    table = ratios(results)
    header = (
        f"{'scheduler':<15} {'N':>4} {'fixed/s':>7} {'tasks':>5} {'p50 s':>6} {'p90 s':>6} "
        f"{'p99 s':>6} {'seen50':>6} {'polls':>6} {'gap99':>6} {'gapmax':>6} {'req/s':>6} "
        f"{'budget':>6} {'max/1s':>6} {'1002':>4} {'p50 x':>6} {'p99 x':>6} {'polls x':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = table.get((r.variant, r.inflight), {})
        print(
            f"{r.variant:<15} {r.inflight:>4} {r.inflight / FIXED_INTERVAL_S:>7.0f} "
            f"{r.measured:>5} {r.delay_p50_s:>6.1f} {r.delay_p90_s:>6.1f} {r.delay_p99_s:>6.1f} "
            f"{r.seen_p50_s:>6.1f} {r.polls_per_task:>6.2f} {r.longest_gap_p99_s:>6.1f} "
            f"{r.gap_max_all_s:>6.1f} {r.requests_per_s:>6.2f} {r.budget_share:>6.0%} "
            f"{r.max_in_any_1s_window:>3}/{r.limit_per_1s_window:<2} {r.rejected_1002:>4} "
            f"{ratio.get('p50', math.nan):>6.2f} {ratio.get('p99', math.nan):>6.2f} "
            f"{ratio.get('polls', math.nan):>7.2f}"
        )
    print(
        f"Real seconds (time compressed {options.factor:g}x; figures scaled back). fixed/s: "
        "what polling every 5 s would ask of the 10/s budget; tasks: measured tasks;\n"
        "p50/p90/p99: upstream done -> pollhook's completed_at; seen50: p50 of upstream "
        "done -> the first query that saw it; polls: polls per measured task;\n"
        "gap99: p99 over measured tasks of the longest each went unqueried; gapmax: the "
        "longest any task went unqueried (all tasks, still-open gaps included);\n"
        "req/s: requests at the upstream (polls and file retrieves) and their share of the "
        "budget;\n"
        "max/1s: most requests in a sliding 1 s window of compressed time against the "
        "compressed limit; 1002: rate-limit answers; x: ratio to fixed, same N."
    )
    print()
    for r in results:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_s.items())
        extra = f", warnings {r.worker_warnings}" if r.worker_warnings else ""
        print(
            f"{r.variant} N={r.inflight}: {r.registered} registered ({r.arrivals} arrivals), "
            f"{r.detected}/{r.measured} measured detected, polls/task over all completed "
            f"{r.polls_per_task_all:.2f}, run {r.run_s / 60:.1f} min real, load at start "
            f"{r.load_average_1m:.2f}, CPU s: {cpu}{extra}"
        )
        outcomes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.poll_outcomes.items()))
        print(f"  worker poll outcomes: {outcomes or '(no metrics)'}")
        if r.unqueried_at_end:
            print(
                f"  {r.unqueried_at_end} tracked tasks registered over {TAIL_GRACE_S:g} s "
                "(real) before the end had never been queried"
            )
        for item in r.providers_at_end:
            if item.get("completion") is not None or item.get("saturation") is not None:
                print(
                    "  /v1/providers at the end of the arrivals (the engine's own figures, "
                    f"compressed seconds): completion {item.get('completion')}, "
                    f"saturation {item.get('saturation')}"
                )
        if r.broken:
            print(f"  BROKEN: {'; '.join(r.broken)}")
    digests = sorted({r.code_digest for r in results})
    if len(digests) > 1:
        print(
            f"\nWARNING: the source under app/ changed during the benchmark ({len(digests)} "
            "versions, see code_digest per run): runs on different code are not comparable."
        )
    rows = targets(results, options.budget)
    if rows:
        print()
    for variant, inflight, what, value, limit, met in rows:
        where = "saturated" if saturated(inflight, options.budget) else "below saturation"
        print(
            f"{variant} N={inflight} ({where}): {what} {value:.3f}x fixed, target <= "
            f"{limit:g}x: {'met' if met else 'MISSED'}"
        )


class SourceChanged(Exception):
    pass


# --- the whole benchmark ------------------------------------------------------------------------


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(
        server,
        factor=options.factor,
        seconds=options.seconds,
        inflight=options.inflight,
        budget=options.budget,
        variants=[v.name for v in options.variants],
        hit_chance=options.hit_chance,
        lateness_s=options.lateness_s,
        mean_duration_s=MEAN_DURATION_S,
        cpu_hog=options.cpu_hog,
    )
    print(
        f"budget {options.budget:g}/s, time compressed {options.factor:g}x "
        f"({options.seconds:g} s of arrivals = {options.seconds * options.factor / 60:.0f} min "
        f"real), N in flight {options.inflight}, mean task {MEAN_DURATION_S:.1f} s real"
        + (f", poll_hit_chance {options.hit_chance:g}" if options.hit_chance else "")
        + (f", poll_lateness_s {options.lateness_s:g}" if options.lateness_s is not None else "")
        + (f", {options.cpu_hog} CPU hog process(es) beside it" if options.cpu_hog else "")
    )
    variants = options.variants
    results: list[RunResult] = []
    digest = code_digest()
    stopped: str | None = None
    with (workdir / "sandbox.log").open("w") as log, cpu_hog(options.cpu_hog):
        sandbox = await Sandbox.start(minimax_rate=options.budget * options.factor, log=log)
        conn = await connect(server)
        try:
            for inflight in options.inflight:
                horizon = options.seconds + options.drain_max_s / options.factor
                arrivals = workload(inflight, horizon, options.factor, options.seed + inflight)
                chosen = measured(arrivals, options.seconds, options.factor)
                print(
                    f"\nN={inflight}: {sum(1 for a in arrivals if a.at_s < options.seconds)} "
                    f"arrivals in the window, {len(chosen)} measured, fixed polling would ask "
                    f"{inflight / FIXED_INTERVAL_S:g}/s of {options.budget:g}/s"
                )
                for variant in variants:
                    if code_digest() != digest:
                        raise SourceChanged(
                            "the source under app/ changed since the benchmark started (and "
                            "migrated its database): stopping, runs on different code are not "
                            "comparable"
                        )
                    print(f"  {variant.name} ...", flush=True)
                    result = await one_run(
                        server,
                        sandbox,
                        conn,
                        workdir,
                        options,
                        variant,
                        inflight,
                        arrivals,
                    )
                    print(
                        f"  {variant.name}: p50 {result.delay_p50_s:.1f} s, p99 "
                        f"{result.delay_p99_s:.1f} s, {result.polls_per_task:.2f} polls/task, "
                        f"{result.requests_per_s:.2f} req/s, max/1s "
                        f"{result.max_in_any_1s_window}, 1002s {result.rejected_1002}",
                        flush=True,
                    )
                    results.append(result)
        except SourceChanged as exc:
            print(f"\nSTOPPED: {exc}")
            stopped = str(exc)
        finally:
            await conn.close()
            await sandbox.stop()
    print_results(results, options)
    ok = bool(results) and not stopped and not any(r.broken for r in results)
    return {
        "meta": meta,
        "results": [asdict(r) for r in results],
        "ratios_vs_fixed": {f"{k[0]}@{k[1]}": v for k, v in ratios(results).items()},
        "targets": [
            {"variant": v, "inflight": n, "what": w, "ratio": x, "limit": lim, "met": met}
            for v, n, w, x, lim, met in targets(results, options.budget)
        ],
        "stopped": stopped,
        "ok": ok,
    }


def parse_variants(text: str) -> list[Variant]:
    """A comma-separated list of VARIANTS' names (an argparse type)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in names]


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adaptive_schedule",
        description="Detection delay and polls per task of pollhook's adaptive poll "
        "scheduling against fixed and backoff polling, under a shared budget.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run: N=100 only, 18 s of arrivals"
    )
    parser.add_argument("--inflight", type=int_list, help="tasks in flight (default 20,100,150)")
    parser.add_argument("--seconds", type=float, help="arrival window, compressed (default 90)")
    parser.add_argument(
        "--drain-max",
        type=float,
        help=f"real seconds to wait for the measured tasks after the arrivals "
        f"(default {DRAIN_MAX_S:g}, --quick {QUICK_DRAIN_MAX_S:g})",
    )
    parser.add_argument("--factor", type=float, default=10.0, help="time compression (10)")
    parser.add_argument("--budget", type=float, default=BUDGET_PER_S, help="real requests/s")
    parser.add_argument(
        "--schedulers",
        type=parse_variants,
        default=list(VARIANTS.values()),
        help=f"comma-separated, from {','.join(VARIANTS)} (default all)",
    )
    parser.add_argument(
        "--hit-chance",
        type=float,
        help="poll_hit_chance of the adaptive variants (default: the engine's, 0.2)",
    )
    parser.add_argument(
        "--lateness",
        type=float,
        help="poll_lateness_s of the adaptive variants, real seconds (default: the engine's)",
    )
    parser.add_argument("--seed", type=int, default=5, help="workload seed")
    parser.add_argument(
        "--cpu-hog",
        type=int,
        default=0,
        metavar="N",
        help="run N processes that only burn CPU beside the benchmark (default 0)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.inflight is not None and (not args.inflight or max(args.inflight) > 1000):
        parser.error("--inflight: in-flight counts between 1 and 1000")
    if args.factor < 1 or args.budget <= 0:
        parser.error("--factor must be at least 1 and --budget positive")
    if args.hit_chance is not None and not 0 < args.hit_chance < 1:
        parser.error("--hit-chance must lie between 0 and 1")
    if args.lateness is not None and args.lateness < 0:
        parser.error("--lateness must not be negative")
    seconds = args.seconds or (18.0 if args.quick else 90.0)
    drain_max = args.drain_max or (QUICK_DRAIN_MAX_S if args.quick else DRAIN_MAX_S)
    if seconds * (1 - WARMUP_SHARE) <= TAIL_GRACE_S / args.factor:
        parser.error("--seconds leaves no measured window after the warm-up and the tail")
    return Options(
        inflight=args.inflight or ([100] if args.quick else [20, 100, 150]),
        seconds=seconds,
        drain_max_s=drain_max,
        factor=args.factor,
        budget=args.budget,
        variants=args.schedulers,
        hit_chance=args.hit_chance,
        lateness_s=args.lateness,
        seed=args.seed,
        json_path=args.json,
        cpu_hog=args.cpu_hog,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-adaptive-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
    )


if __name__ == "__main__":
    sys.exit(main())
