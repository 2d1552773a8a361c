"""Webhook delivery: completion-to-delivery latency and delivery throughput, each next to a
bare httpx POST loop measured in the same run.

Run from the repository root:

    python -m bench.webhook_delivery [--tasks 500] [--durations 1,20] [--deliveries 10000]
        [--in-flight 64,256] [--reference-concurrency 4] [--rate 100] [--rate-seconds 10]
        [--phases latency,rate,throughput] [--max-seconds 300] [--py-spy DIR] [--json PATH]

Setup, shared by both phases: a throwaway embedded Postgres (unix socket, temporary directory
under /tmp, deleted afterwards), migrated; the sandbox (`python -m app.cli sandbox
--minimax-rate 0 --jimmy-rate 0`) as a subprocess; a local consumer (`bench/receiver.py`,
a raw HTTP/1.1 responder on 127.0.0.1 in its own process, answering 200 at once and recording
`time.time()` of each webhook's arrival with its webhook-id, and whether its signature
verifies); one webhook endpoint row for the benchmark tenant pointing at it (written with
SQL: events NULL = the terminal event types, a `whsec_` secret). pollhook runs as `python -m
app.cli worker` subprocesses (uvloop, the code production runs) with
`POLLHOOK_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8`. This process drives everything on uvloop
too, so the baselines run on the same event loop as the worker.

1. Latency (`--tasks` sandbox tasks, durations uniform in `--durations`, 1-20 s by default).
   A worker with the minimax instance pointed at the sandbox: no rate limit, first poll at
   once, poll interval 0.5 s growing to 1 s. The tasks are registered with SQL (status
   `processing`, due now) while the worker is idle and listening; then every task's terminal
   webhook is awaited (bounded). For each task:
   - "upstream done -> pollhook knows": tasks.completed_at (Postgres now() of the transaction
     that applied the poll) - the sandbox's ready_at. Detection is bounded by the poll
     interval (at most 1 s here, plus the poll itself): this is the polling part, split into
     "done -> first poll that saw it" (the sandbox's first_done_poll_at) and "that poll ->
     status committed" (the MiniMax file-retrieve request and the apply transaction).
   - "pollhook knows -> consumer receives": the receiver's arrival time - completed_at: the
     commit, the NOTIFY, the delivery loop's claim, signing and the HTTP POST.
   - end to end: arrival - ready_at.
   Baseline: after the worker is stopped, a bare httpx POST loop sends `--tasks` webhooks of
   the same body (one this phase delivered, as pollhook's webhook_body builds it from its
   event, signed per request), one at a time
   `--baseline-gap-ms` apart, to the same receiver: send -> arrival and the round trip. That
   is the floor of "send a webhook".

2. Latency at a steady rate (`--rate` deliveries per second for `--rate-seconds`): the
   delivery path alone, without the polling that shares the worker in phase 1. The events
   are written first; a worker (default settings) is started and left idle until it
   listens; then one delivery is committed at a time, `--rate` per second (an INSERT ...
   SELECT of fan_out's shape, autocommitted: what a status change commits for one
   endpoint). "committed -> consumer receives" runs from just before each INSERT is sent to
   the receiver's arrival time, so the insert and its commit count against pollhook.
   Baseline: bare httpx POSTs of one body at the same rate, send -> arrival. Beside the
   deliveries, this process measures the machine's scheduling jitter: how late a 5 ms sleep
   wakes (every process on the path pays that at each wake-up).

3. Throughput (`--deliveries` pending deliveries, once per `--in-flight` value). The tasks
   table is refilled with that many succeeded tasks and one task.succeeded event each
   (payloads shaped as pollhook writes them). First the baseline: a bare httpx POST loop,
   one shared httpx.AsyncClient (max_connections = keep-alive connections = the concurrency)
   and that many coroutines, sends each event's body (pollhook's webhook_body, signed per
   request with pollhook's signing code) to the receiver. Then pollhook: a worker with
   `POLLHOOK_WEBHOOKS__MAX_IN_FLIGHT` at that value is started and left idle until it
   listens; one INSERT ... SELECT (fan_out's shape) writes one pending delivery per event,
   due now, and the clock starts when it commits (the trigger's NOTIFY wakes the worker).
   Measured until every delivery is `succeeded` (the database is checked every 0.2 s):
   deliveries/s = deliveries / (last completed_at - commit). Postgres transactions per
   delivery (pg_stat_database, the benchmark's own statements taken out) are reported too.
   The baseline also runs at `--reference-concurrency` (4): httpx's CPU cost per request
   grows with the connections its pool holds, so the same-concurrency baseline is not the
   fastest a bare client gets.
   Checked in every phase: every webhook-id arrived exactly once, and every request's
   signature verifies with `standardwebhooks`.

CPU seconds of the sender (the worker, or this process for the baselines), the receiver,
the sandbox and Postgres are reported per delivery. All of them share the machine's cores
(2 on the machine these numbers were first taken on), so the numbers are a lower bound for a
dedicated server; the header prints the load average when the run started, since other
benchmarks may be running. `--py-spy DIR` records the rate phase's worker and each
throughput run's sender with py-spy (raw collapsed stacks, `--nonblocking`) into DIR.

This is a benchmark, not a test: it prints tables (and optionally writes JSON) and exits
non-zero only when a phase failed (something not delivered, delivered twice, a signature
that does not verify, a worker that exited).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import random
import shutil
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop

from app.core.embedded import EmbeddedPostgres
from app.models import TaskStatus
from app.providers.minimax_t2a import MinimaxT2AResult
from app.webhooks import signing
from app.webhooks.delivery import delivery_headers, webhook_body
from app.webhooks.events import TERMINAL_EVENT_TYPES, TaskSnapshot
from app.webhooks.repository import ClaimedDelivery
from bench._support import (
    TENANT,
    CpuProbe,
    Sandbox,
    begin,
    connect,
    count_warnings,
    int_list,
    percentile,
    pollhook_env,
    run_benchmark,
    start_worker,
    steady_rate,
    stop_process,
)
from bench.receiver import Receiver

CHECK_EVERY_S = 0.2
# The machine's scheduling jitter during the rate phase: how late a sleep of this length in
# this (mostly idle) process wakes. It is what every process on the delivery path (the
# driver, Postgres, the worker, the receiver) pays at each wake-up, so it separates the
# machine's share of a slow delivery from pollhook's.
JITTER_PROBE_S = 0.005
PROGRESS_EVERY_S = 5.0
HOOK_PATH = "/hook"
SANDBOX_CONCURRENCY = 16


@dataclass
class Options:
    tasks: int
    durations: tuple[float, float]
    poll_interval: tuple[float, float]
    baseline_gap_s: float
    deliveries: int
    in_flight: list[int]
    reference: list[int]
    phases: set[str]
    max_seconds: float
    seed: int
    rate: float
    rate_seconds: float
    py_spy: Path | None
    json_path: Path | None


# --- numbers ----------------------------------------------------------------------------------


@dataclass
class Dist:
    """Milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> Dist:
        values = sorted(v * 1000 for v in seconds)
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=values[-1],
            mean=sum(values) / len(values),
        )


@dataclass
class Received:
    """What the receiver saw: arrival per webhook-id, duplicates, signature checks."""

    arrivals: dict[str, float]
    count: int
    duplicates: int
    connections: int
    body_bytes: int  # the median
    signatures_checked: int
    signatures_failed: int

    @classmethod
    def of(cls, dump: dict[str, Any]) -> Received:
        arrivals: dict[str, float] = {}
        duplicates = 0
        for record in dump["records"]:
            if record["id"] in arrivals:
                duplicates += 1
            else:
                arrivals[record["id"]] = float(record["t"])
        sizes = sorted(int(r["size"]) for r in dump["records"])
        verdicts = [r["signed"] for r in dump["records"] if r["signed"] is not None]
        return cls(
            arrivals=arrivals,
            count=len(dump["records"]),
            duplicates=duplicates,
            connections=int(dump["connections"]),
            body_bytes=sizes[len(sizes) // 2] if sizes else 0,
            signatures_checked=len(verdicts),
            signatures_failed=verdicts.count(False),
        )

    def missing(self, expected: set[str]) -> int:
        return len(expected - self.arrivals.keys())

    def unexpected(self, expected: set[str]) -> int:
        return len(self.arrivals.keys() - expected)


@dataclass
class LatencyResult:
    tasks: int
    received: int
    duplicates: int
    missing: int
    seconds: float
    detection: Dist  # upstream done -> pollhook knows (completed_at - ready_at)
    poll_lag: Dist  # done -> the first poll that saw it done
    apply: Dist  # that poll -> completed_at
    delivery: Dist  # pollhook knows -> consumer receives
    end_to_end: Dist
    baseline_one_way: Dist
    baseline_rtt: Dist
    body_bytes: int
    signatures_checked: int
    signatures_failed: int
    attempts_over_one: int
    upstream_requests: int  # status queries and file retrieves the sandbox served
    worker_warnings: dict[str, int]
    cpu_s: dict[str, float]
    complete: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class RateResult:
    """Phase 3: deliveries committed one at a time at a steady rate, commit -> arrival."""

    rate: float
    deliveries: int
    received: int
    duplicates: int
    missing: int
    seconds: float
    delivery: Dist  # committed -> consumer receives
    baseline_one_way: Dist  # bare httpx POSTs at the same rate: send -> receives
    jitter: Dist  # how late a JITTER_PROBE_S sleep in this process woke, during the deliveries
    signatures_checked: int
    signatures_failed: int
    cpu_s: dict[str, float]
    complete: bool
    worker_warnings: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ThroughputResult:
    name: str
    concurrency: int
    deliveries: int
    received: int
    duplicates: int
    missing: int
    seconds: float
    per_s: float
    steady_per_s: float  # between 10 % and 90 % delivered
    connections: int  # TCP connections the receiver accepted
    body_bytes: int
    signatures_checked: int
    signatures_failed: int
    cpu_s: dict[str, float]
    complete: bool
    insert_s: float = 0.0
    attempts: int = 0
    # Postgres transactions per delivery, from pg_stat_database (the benchmark's own removed):
    # commits, and rollbacks (SQLAlchemy's pool_pre_ping on asyncpg is BEGIN; ";"; ROLLBACK).
    commits_per_delivery: float = 0.0
    rollbacks_per_delivery: float = 0.0
    worker_warnings: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Profiler:
    """py-spy recording one process (when asked for), stopped with SIGINT."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(self.directory / f"{name}.txt"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # let it attach

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process(self.process, "py-spy", signal.SIGINT)
            self.process = None


def worker_env(
    server: EmbeddedPostgres, sandbox: Sandbox, options: Options, **settings: object
) -> dict[str, str]:
    """The minimax instance on the sandbox: no rate limit, first poll at once, the option's
    poll intervals; webhooks may go to the loopback receiver."""
    minimax = {
        "rate_limit_per_s": 0,
        "first_poll_delay_s": 0,
        "min_poll_interval_s": options.poll_interval[0],
        "max_poll_interval_s": options.poll_interval[1],
    }
    return pollhook_env(
        server,
        sandbox=sandbox,
        providers={"minimax": minimax},
        webhook_allow_networks="127.0.0.0/8",
        **settings,
    )


# --- the database -----------------------------------------------------------------------------


async def add_endpoint(conn: asyncpg.Connection, url: str) -> tuple[uuid.UUID, str]:
    endpoint_id = uuid.uuid4()
    secret = signing.generate_secret()
    await conn.execute(
        """
        INSERT INTO webhook_endpoints (id, tenant, url, secret, events, enabled)
        VALUES ($1, $2, $3, $4, NULL, true)
        """,
        endpoint_id,
        TENANT,
        url,
        secret,
    )
    return endpoint_id, secret


async def clear_tasks(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE tasks CASCADE")  # events, deliveries, delivery_attempts too
    await conn.execute("CHECKPOINT")


async def transactions(conn: asyncpg.Connection, *, flushed: bool = False) -> tuple[int, int]:
    """This database's (commits, rollbacks) so far. `flushed`: first make this connection
    report its own pending counts (the worker's backends report theirs when they exit)."""
    if flushed:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(0.2)
    row = await conn.fetchrow(
        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(row["xact_commit"]), int(row["xact_rollback"])


def succeeded_payloads(count: int, sandbox_url: str, rng: random.Random) -> list[dict[str, Any]]:
    """Task objects of succeeded MiniMax tasks, as pollhook puts them in events."""
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(hours=9)
    payloads = []
    for _ in range(count):
        file_id = rng.randrange(10**14, 10**15)
        payloads.append(
            TaskSnapshot(
                id=uuid.uuid4(),
                provider="minimax",
                external_id=str(rng.randrange(10**17, 10**18)),
                status=TaskStatus.SUCCEEDED,
                result=MinimaxT2AResult(
                    kind="minimax_t2a",
                    file_id=str(file_id),
                    download_url=f"{sandbox_url}/_sandbox/files/{file_id}.tar"
                    f"?expires={int(expires.timestamp())}",
                    download_url_expires_at=expires,
                    filename=f"{file_id}.tar",
                ),
                error=None,
                metadata={},
                callback_url=None,
                polls=4,
                sequence=2,
                created_at=now - dt.timedelta(seconds=12),
                updated_at=now,
                completed_at=now,
                next_poll_at=None,
                estimated_ready_at=None,
                size_hint=None,
                deadline_at=now + dt.timedelta(hours=6),
                last_poll_error=None,
                archive=None,
            ).model_dump(mode="json")
        )
    return payloads


async def load_succeeded(conn: asyncpg.Connection, payloads: list[dict[str, Any]]) -> None:
    """One succeeded task and its task.succeeded event per payload; no deliveries yet."""
    ids = [uuid.UUID(p["id"]) for p in payloads]
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO tasks (id, tenant, provider, external_id, status, upstream_status,
                               result, polls, sequence, deadline_at, completed_at)
            SELECT x.id, $1, 'minimax', x.external_id, 'succeeded', 'Success',
                   x.result::jsonb, 4, 2, now() + interval '6 hours', now()
            FROM unnest($2::uuid[], $3::text[], $4::text[]) AS x(id, external_id, result)
            """,
            TENANT,
            ids,
            [p["external_id"] for p in payloads],
            [json.dumps(p["result"]) for p in payloads],
        )
        await conn.execute(
            """
            INSERT INTO events (id, task_id, tenant, type, sequence, payload)
            SELECT gen_random_uuid(), x.task_id, $1, 'task.succeeded', 2, x.payload::jsonb
            FROM unnest($2::uuid[], $3::text[]) AS x(task_id, payload)
            """,
            TENANT,
            ids,
            [json.dumps(p) for p in payloads],
        )
    await conn.execute("ANALYZE tasks, events, deliveries")
    await conn.execute("CHECKPOINT")


async def event_bodies(conn: asyncpg.Connection) -> list[tuple[str, bytes]]:
    """(webhook-id, body) of every event, the bytes pollhook's delivery loop sends."""
    rows = await conn.fetch("SELECT id, type, created_at, payload FROM events ORDER BY id")
    bodies = []
    for r in rows:
        claim = ClaimedDelivery(
            id=r["id"],
            token=0,
            tenant=TENANT,
            url="",
            endpoint_id=None,
            attempts=0,
            event_id=r["id"],
            event_type=r["type"],
            event_created_at=r["created_at"],
            payload=json.loads(r["payload"]),
            secrets=[],
            endpoint_enabled=True,
            limit_key="",
        )
        bodies.append((str(r["id"]), webhook_body(claim, claim.payload)))
    return bodies


# --- baselines --------------------------------------------------------------------------------


def baseline_client(concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=15.0,
        follow_redirects=False,
    )


def signed_headers(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    return delivery_headers([secret], webhook_id, body)


async def baseline_post_loop(
    url: str, secret: str, bodies: list[tuple[str, bytes]], concurrency: int
) -> tuple[float, int]:
    """POST every body, `concurrency` at a time; (seconds, non-2xx answers)."""
    failures = 0
    queue = iter(bodies)
    async with baseline_client(concurrency) as client:

        async def sender() -> None:
            nonlocal failures
            for webhook_id, body in queue:
                headers = signed_headers(secret, webhook_id, body)
                response = await client.post(url, content=body, headers=headers)
                if not response.is_success:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started, failures


async def baseline_latency(
    receiver: Receiver, secret: str, body: bytes, count: int, gap_s: float
) -> tuple[Dist, Dist]:
    """One webhook at a time: (send -> arrival, round trip)."""
    await receiver.reset()
    sent: dict[str, float] = {}
    rtts: list[float] = []
    async with baseline_client(1) as client:
        for index in range(count):
            webhook_id = f"baseline-{index}"
            started_wall = time.time()
            started = time.perf_counter()
            headers = signed_headers(secret, webhook_id, body)
            response = await client.post(receiver.url(HOOK_PATH), content=body, headers=headers)
            rtts.append(time.perf_counter() - started)
            response.raise_for_status()
            sent[webhook_id] = started_wall
            await asyncio.sleep(gap_s)
    received = Received.of(await receiver.dump())
    one_way = [received.arrivals[i] - t for i, t in sent.items() if i in received.arrivals]
    return Dist.of(one_way), Dist.of(rtts)


# --- phase 1: latency -------------------------------------------------------------------------


async def create_sandbox_tasks(sandbox: Sandbox, durations: list[float]) -> list[str]:
    gate = asyncio.Semaphore(SANDBOX_CONCURRENCY)

    async def one(duration: float) -> str:
        async with gate:
            response = await sandbox.http.post(
                "/_sandbox/tasks", json={"provider": "minimax", "duration_s": duration}
            )
            response.raise_for_status()
            return str(response.json()["id"])

    return list(await asyncio.gather(*(one(d) for d in durations)))


async def latency_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    receiver: Receiver,
    conn: asyncpg.Connection,
    secret: str,
    options: Options,
    workdir: Path,
) -> LatencyResult:
    print(f"latency: {options.tasks} tasks ...", flush=True)
    rng = random.Random(options.seed)
    await clear_tasks(conn)
    await sandbox.reset()
    await receiver.reset()
    log_path = workdir / "worker-latency.log"
    notes: list[str] = []
    with log_path.open("w") as log:
        worker = await start_worker(conn, worker_env(server, sandbox, options), log)
        try:
            cpu = CpuProbe(
                server.server.get_pid(),
                {
                    "sender": worker.pid,
                    "receiver": receiver.process.pid,
                    "sandbox": sandbox.process.pid,
                },
            )
            cpu_before = cpu.sample()
            low, high = options.durations
            durations = [rng.uniform(low, high) for _ in range(options.tasks)]
            external_ids = await create_sandbox_tasks(sandbox, durations)
            await conn.execute(
                """
                INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at,
                                   next_poll_at)
                SELECT gen_random_uuid(), $1, 'minimax', x, 'processing',
                       now() + interval '1 day', now()
                FROM unnest($2::text[]) AS x
                """,
                TENANT,
                external_ids,
            )
            started = time.perf_counter()
            limit = min(options.max_seconds, high + 60.0)
            next_report = started + PROGRESS_EVERY_S
            while True:
                received = await receiver.count()
                now = time.perf_counter()
                if received >= options.tasks:
                    break
                if worker.returncode is not None:
                    notes.append(f"the worker exited with status {worker.returncode}")
                    break
                if now - started > limit:
                    notes.append(f"cut off after {limit:.0f} s")
                    break
                if now >= next_report:
                    print(f"  {now - started:5.0f} s: {received}/{options.tasks} received")
                    next_report += PROGRESS_EVERY_S
                await asyncio.sleep(CHECK_EVERY_S)
            seconds = time.perf_counter() - started
            cpu_after = cpu.sample()
            # Let a duplicate (a second attempt of something already delivered) show up.
            await asyncio.sleep(1.0)
            got = Received.of(await receiver.dump())
            tasks = await conn.fetch(
                """
                SELECT t.external_id, t.status, extract(epoch FROM t.completed_at) AS completed,
                       e.id AS event_id, d.attempts
                FROM tasks t
                LEFT JOIN events e ON e.task_id = t.id AND e.type = ANY($1::text[])
                LEFT JOIN deliveries d ON d.event_id = e.id
                """,
                [str(t) for t in TERMINAL_EVENT_TYPES],
            )
            upstream = await sandbox.tasks(external_ids)
            upstream_requests = int((await sandbox.key_stats())["requests"])
        finally:
            await stop_process(worker, "worker")
    warnings = count_warnings([log_path])

    expected = {str(r["event_id"]) for r in tasks if r["event_id"] is not None}
    detection, poll_lag, apply, delivery, end_to_end = [], [], [], [], []
    for r in tasks:
        up = upstream[r["external_id"]]
        ready = float(up["ready_at"])
        completed = float(r["completed"]) if r["completed"] is not None else None
        first_done = up["first_done_poll_at"]
        if completed is not None:
            detection.append(completed - ready)
            if first_done is not None:
                poll_lag.append(float(first_done) - ready)
                apply.append(completed - float(first_done))
        arrival = got.arrivals.get(str(r["event_id"]))
        if arrival is not None and completed is not None:
            delivery.append(arrival - completed)
            end_to_end.append(arrival - ready)
    not_succeeded = sum(1 for r in tasks if r["status"] != "succeeded")
    if not_succeeded:
        notes.append(f"{not_succeeded} tasks did not end succeeded")
    attempts_over_one = sum(1 for r in tasks if (r["attempts"] or 0) > 1)
    missing = options.tasks - len(expected & got.arrivals.keys())
    if got.unexpected(expected):
        notes.append(f"{got.unexpected(expected)} unexpected webhook-ids received")

    bodies = await event_bodies(conn)
    if bodies:
        print("  baseline: one bare httpx POST at a time ...", flush=True)
        one_way, rtt = await baseline_latency(
            receiver, secret, bodies[0][1], options.tasks, options.baseline_gap_s
        )
    else:
        one_way = rtt = Dist.of([])
        notes.append("no event written: no baseline body")
    result = LatencyResult(
        tasks=options.tasks,
        received=got.count,
        duplicates=got.duplicates,
        missing=missing,
        seconds=seconds,
        detection=Dist.of(detection),
        poll_lag=Dist.of(poll_lag),
        apply=Dist.of(apply),
        delivery=Dist.of(delivery),
        end_to_end=Dist.of(end_to_end),
        baseline_one_way=one_way,
        baseline_rtt=rtt,
        body_bytes=got.body_bytes,
        signatures_checked=got.signatures_checked,
        signatures_failed=got.signatures_failed,
        attempts_over_one=attempts_over_one,
        upstream_requests=upstream_requests,
        worker_warnings=warnings,
        cpu_s=CpuProbe.delta(cpu_before, cpu_after),
        complete=(
            missing == 0
            and got.duplicates == 0
            and not_succeeded == 0
            and got.signatures_checked > 0
            and got.signatures_failed == 0
            and not notes
        ),
        notes=notes,
    )
    print(
        f"  {got.count} webhooks for {options.tasks} tasks in {seconds:.1f} s "
        f"({got.duplicates} duplicates, {missing} missing)",
        flush=True,
    )
    return result


# --- phase 2: throughput ----------------------------------------------------------------------


async def throughput_baseline(
    server: EmbeddedPostgres,
    receiver: Receiver,
    secret: str,
    bodies: list[tuple[str, bytes]],
    concurrency: int,
    profiler: Profiler,
) -> ThroughputResult:
    name = f"baseline httpx concurrency={concurrency}"
    print(f"  {name}: running ...", flush=True)
    await receiver.reset()
    cpu = CpuProbe(
        server.server.get_pid(), {"sender": os.getpid(), "receiver": receiver.process.pid}
    )
    await profiler.start(os.getpid(), f"baseline-c{concurrency}")
    try:
        before = cpu.sample()
        seconds, failures = await baseline_post_loop(
            receiver.url(HOOK_PATH), secret, bodies, concurrency
        )
        after = cpu.sample()
    finally:
        await profiler.stop()
    got = Received.of(await receiver.dump())
    expected = {i for i, _ in bodies}
    missing = got.missing(expected)
    notes = [f"{failures} non-2xx answers"] if failures else []
    result = ThroughputResult(
        name=name,
        concurrency=concurrency,
        deliveries=len(bodies),
        received=got.count,
        duplicates=got.duplicates,
        missing=missing,
        seconds=seconds,
        per_s=len(bodies) / seconds if seconds > 0 else 0.0,
        steady_per_s=0.0,
        connections=got.connections,
        body_bytes=got.body_bytes,
        signatures_checked=got.signatures_checked,
        signatures_failed=got.signatures_failed,
        cpu_s=CpuProbe.delta(before, after),
        complete=(
            missing == 0 and got.duplicates == 0 and got.signatures_failed == 0 and not failures
        ),
        notes=notes,
    )
    print(f"  {name}: {len(bodies)} in {seconds:.2f} s ({result.per_s:.0f}/s)", flush=True)
    return result


async def throughput_pollhook(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    receiver: Receiver,
    conn: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    expected: set[str],
    in_flight: int,
    options: Options,
    workdir: Path,
    profiler: Profiler,
) -> ThroughputResult:
    name = f"pollhook max_in_flight={in_flight}"
    print(f"  {name}: running ...", flush=True)
    await conn.execute("TRUNCATE deliveries CASCADE")
    await conn.execute("UPDATE webhook_endpoints SET failing_since = NULL")
    await conn.execute("CHECKPOINT")
    await receiver.reset()
    total = len(expected)
    log_path = workdir / f"worker-throughput-{in_flight}.log"
    notes: list[str] = []
    samples: list[tuple[float, int]] = []
    with log_path.open("w") as log:
        env = worker_env(server, sandbox, options, webhooks__max_in_flight=in_flight)
        worker = await start_worker(conn, env, log)
        try:
            cpu = CpuProbe(
                server.server.get_pid(),
                {"sender": worker.pid, "receiver": receiver.process.pid},
            )
            await profiler.start(worker.pid, f"pollhook-inflight{in_flight}")
            xacts_before = await transactions(conn)
            own = 1  # the statements this benchmark runs until the second reading
            before = cpu.sample()
            insert_started = time.time()
            await conn.execute(
                """
                INSERT INTO deliveries
                    (id, event_id, task_id, endpoint_id, tenant, url, status, next_attempt_at)
                SELECT gen_random_uuid(), e.id, e.task_id, w.id, e.tenant, w.url,
                       'pending', now()
                FROM events e JOIN webhook_endpoints w ON w.id = $1
                """,
                endpoint_id,
            )
            committed = time.time()
            started = time.perf_counter()
            done = 0
            while True:
                row = await conn.fetchrow(
                    """
                    SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                           count(*) FILTER (WHERE status = 'failed') AS failed
                    FROM deliveries
                    """
                )
                own += 1
                now = time.perf_counter()
                done = int(row["succeeded"])
                samples.append((now - started, done))
                if done + int(row["failed"]) >= total:
                    break
                if worker.returncode is not None:
                    notes.append(f"the worker exited with status {worker.returncode}")
                    break
                if now - started > options.max_seconds:
                    notes.append(f"cut off after {options.max_seconds:.0f} s")
                    break
                await asyncio.sleep(CHECK_EVERY_S)
            after = cpu.sample()
            await profiler.stop()
            await asyncio.sleep(0.5)  # let a duplicate show up
            row = await conn.fetchrow(
                """
                SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                       count(*) FILTER (WHERE status = 'failed') AS failed,
                       coalesce(sum(attempts), 0) AS attempts,
                       extract(epoch FROM max(completed_at)) AS last
                FROM deliveries
                """
            )
            own += 2
        finally:
            await profiler.stop()
            await stop_process(worker, "worker")
    xacts = await transactions(conn, flushed=True)
    commits = xacts[0] - xacts_before[0] - own
    rollbacks = xacts[1] - xacts_before[1]
    got = Received.of(await receiver.dump())
    last = float(row["last"]) if row["last"] is not None else time.time()
    seconds = max(last - committed, 1e-9)
    succeeded = int(row["succeeded"])
    if int(row["failed"]):
        notes.append(f"{row['failed']} deliveries failed")
    missing = got.missing(expected)
    if got.unexpected(expected):
        notes.append(f"{got.unexpected(expected)} unexpected webhook-ids received")
    result = ThroughputResult(
        name=name,
        concurrency=in_flight,
        deliveries=total,
        received=got.count,
        duplicates=got.duplicates,
        missing=missing,
        seconds=seconds,
        per_s=succeeded / seconds,
        steady_per_s=steady_rate(samples, total),
        connections=got.connections,
        body_bytes=got.body_bytes,
        signatures_checked=got.signatures_checked,
        signatures_failed=got.signatures_failed,
        cpu_s=CpuProbe.delta(before, after),
        complete=(
            succeeded == total
            and missing == 0
            and got.duplicates == 0
            and got.signatures_checked > 0
            and got.signatures_failed == 0
            and not notes
        ),
        insert_s=committed - insert_started,
        attempts=int(row["attempts"]),
        commits_per_delivery=commits / total,
        rollbacks_per_delivery=rollbacks / total,
        worker_warnings=count_warnings([log_path]),
        notes=notes,
    )
    print(
        f"  {name}: {succeeded}/{total} succeeded in {seconds:.2f} s ({result.per_s:.0f}/s), "
        f"{got.connections} connections",
        flush=True,
    )
    return result


async def throughput_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    receiver: Receiver,
    conn: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    secret: str,
    options: Options,
    workdir: Path,
) -> list[ThroughputResult]:
    print(f"throughput: {options.deliveries} pending deliveries ...", flush=True)
    await clear_tasks(conn)
    payloads = succeeded_payloads(options.deliveries, sandbox.base_url, random.Random(options.seed))
    await load_succeeded(conn, payloads)
    bodies = await event_bodies(conn)
    expected = {i for i, _ in bodies}
    profiler = Profiler(options.py_spy)
    results: list[ThroughputResult] = []
    for concurrency in options.reference:
        results.append(
            await throughput_baseline(server, receiver, secret, bodies, concurrency, profiler)
        )
    for in_flight in options.in_flight:
        results.append(
            await throughput_baseline(server, receiver, secret, bodies, in_flight, profiler)
        )
        results.append(
            await throughput_pollhook(
                server,
                sandbox,
                receiver,
                conn,
                endpoint_id,
                expected,
                in_flight,
                options,
                workdir,
                profiler,
            )
        )
    return results


# --- phase 3: latency at a steady rate --------------------------------------------------------


async def rate_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    receiver: Receiver,
    conn: asyncpg.Connection,
    endpoint_id: uuid.UUID,
    secret: str,
    options: Options,
    workdir: Path,
    profiler: Profiler,
) -> RateResult:
    count = max(1, round(options.rate * options.rate_seconds))
    print(f"rate: {count} deliveries at {options.rate:g}/s ...", flush=True)
    await clear_tasks(conn)
    await load_succeeded(
        conn, succeeded_payloads(count, sandbox.base_url, random.Random(options.seed))
    )
    bodies = await event_bodies(conn)
    await receiver.reset()
    log_path = workdir / "worker-rate.log"
    notes: list[str] = []
    committed: dict[str, float] = {}
    with log_path.open("w") as log:
        worker = await start_worker(conn, worker_env(server, sandbox, options), log)
        try:
            cpu = CpuProbe(
                server.server.get_pid(),
                {"sender": worker.pid, "receiver": receiver.process.pid},
            )
            await profiler.start(worker.pid, "pollhook-rate")
            before = cpu.sample()
            lateness: list[float] = []
            jitter = asyncio.create_task(probe_jitter(lateness))
            started = time.perf_counter()
            for index, (webhook_id, _) in enumerate(bodies):
                wait_s = started + index / options.rate - time.perf_counter()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                # What a status change commits for one endpoint: one delivery, whose trigger
                # wakes the worker. Taken before the statement is sent, so the insert and the
                # commit count against pollhook.
                sent = time.time()
                await conn.execute(
                    """
                    INSERT INTO deliveries
                        (id, event_id, task_id, endpoint_id, tenant, url, status,
                         next_attempt_at)
                    SELECT gen_random_uuid(), e.id, e.task_id, w.id, e.tenant, w.url,
                           'pending', now()
                    FROM events e JOIN webhook_endpoints w ON w.id = $1
                    WHERE e.id = $2
                    """,
                    endpoint_id,
                    uuid.UUID(webhook_id),
                )
                committed[webhook_id] = sent
            deadline = time.perf_counter() + options.max_seconds
            while await receiver.count() < count:
                if worker.returncode is not None:
                    notes.append(f"the worker exited with status {worker.returncode}")
                    break
                if time.perf_counter() > deadline:
                    notes.append(f"cut off after {options.max_seconds:.0f} s")
                    break
                await asyncio.sleep(CHECK_EVERY_S)
            seconds = time.perf_counter() - started
            after = cpu.sample()
            jitter.cancel()
            await profiler.stop()
            await asyncio.sleep(0.5)  # let a duplicate show up
        finally:
            await profiler.stop()
            await stop_process(worker, "worker")
    got = Received.of(await receiver.dump())
    expected = set(committed)
    one_way, _ = await baseline_latency(
        receiver, secret, bodies[0][1], min(count, 500), 1 / options.rate
    )
    missing = got.missing(expected)
    result = RateResult(
        rate=options.rate,
        deliveries=count,
        received=got.count,
        duplicates=got.duplicates,
        missing=missing,
        seconds=seconds,
        delivery=Dist.of([got.arrivals[i] - t for i, t in committed.items() if i in got.arrivals]),
        baseline_one_way=one_way,
        jitter=Dist.of(lateness),
        signatures_checked=got.signatures_checked,
        signatures_failed=got.signatures_failed,
        cpu_s=CpuProbe.delta(before, after),
        complete=(
            missing == 0
            and got.duplicates == 0
            and got.signatures_checked > 0
            and got.signatures_failed == 0
            and not notes
        ),
        worker_warnings=count_warnings([log_path]),
        notes=notes,
    )
    print(f"  {got.count} received for {count} in {seconds:.1f} s", flush=True)
    return result


async def probe_jitter(lateness: list[float]) -> None:
    """Until cancelled: how much later than asked each short sleep returns."""
    # perf_counter, not the loop's clock: uvloop's counts whole milliseconds.
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(JITTER_PROBE_S)
        lateness.append(max(0.0, time.perf_counter() - asked - JITTER_PROBE_S))


# --- output -----------------------------------------------------------------------------------


def print_rate(r: RateResult) -> None:
    print()
    header = f"{f'steady rate {r.rate:g}/s (ms), {r.deliveries} deliveries':<46} {'n':>5} " + (
        " ".join(f"{h:>8}" for h in ("p50", "p90", "p99", "max", "mean"))
    )
    print(header)
    print("-" * len(header))
    for label, d in (
        ("committed -> consumer receives", r.delivery),
        ("baseline: bare httpx POST, send -> receives", r.baseline_one_way),
        (f"jitter: a {JITTER_PROBE_S * 1000:g} ms sleep's lateness, same time", r.jitter),
    ):
        print(
            f"{label:<46} {d.n:>5} {d.p50:>8.1f} {d.p90:>8.1f} {d.p99:>8.1f} {d.max:>8.1f} "
            f"{d.mean:>8.1f}"
        )
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in r.cpu_s.items())
    busy = r.cpu_s.get("sender", 0.0) / r.seconds if r.seconds > 0 else 0.0
    print(
        f"{r.received} received, {r.duplicates} duplicates, {r.missing} missing; "
        f"{r.signatures_checked - r.signatures_failed}/{r.signatures_checked} signatures "
        f"verify; CPU over {r.seconds:.1f} s: {cpu} (the worker was busy {busy:.0%} of one "
        f"core) - {'ok' if r.complete else 'FAILED'}"
    )
    if r.worker_warnings:
        print(f"worker warnings: {r.worker_warnings}")
    for note in r.notes:
        print(f"  note: {note}")


def print_latency(r: LatencyResult) -> None:
    print()
    header = f"{'latency (ms), ' + str(r.tasks) + ' tasks':<46} {'n':>5} " + " ".join(
        f"{h:>8}" for h in ("p50", "p90", "p99", "max", "mean")
    )
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, Dist]] = [
        ("upstream done -> pollhook knows", r.detection),
        ("  done -> first poll that saw it", r.poll_lag),
        ("  that poll -> status committed", r.apply),
        ("pollhook knows -> consumer receives", r.delivery),
        ("end to end (done -> receives)", r.end_to_end),
        ("baseline: bare httpx POST, send -> receives", r.baseline_one_way),
        ("baseline: bare httpx POST, round trip", r.baseline_rtt),
    ]
    for label, d in rows:
        print(
            f"{label:<46} {d.n:>5} {d.p50:>8.1f} {d.p90:>8.1f} {d.p99:>8.1f} {d.max:>8.1f} "
            f"{d.mean:>8.1f}"
        )
    base = r.baseline_one_way
    if base.p50 > 0:
        print(
            f"knows -> receives over the baseline: p50 {r.delivery.p50 / base.p50:.1f}x, "
            f"p99 {r.delivery.p99 / base.p99:.1f}x"
        )
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in r.cpu_s.items())
    busy = r.cpu_s.get("sender", 0.0) / r.seconds if r.seconds > 0 else 0.0
    print(
        f"body {r.body_bytes} bytes; {r.received} received, {r.duplicates} duplicates, "
        f"{r.missing} missing; {r.signatures_checked - r.signatures_failed}/"
        f"{r.signatures_checked} signatures verify; deliveries with more than one "
        f"attempt: {r.attempts_over_one}; CPU over {r.seconds:.1f} s: {cpu} (the worker "
        f"was busy {busy:.0%} of one core); {r.upstream_requests} upstream requests "
        f"({r.upstream_requests / r.seconds if r.seconds > 0 else 0:.0f}/s)"
    )
    if r.worker_warnings:
        print(f"worker warnings: {r.worker_warnings}")
    for note in r.notes:
        print(f"  note: {note}")


def ratios(results: list[ThroughputResult]) -> dict[str, float]:
    """Each pollhook run's deliveries/s over the baseline's at the same concurrency."""
    found: dict[str, float] = {}
    for r in results:
        if not r.name.startswith("pollhook"):
            continue
        base = next(
            (
                b
                for b in results
                if b.name.startswith("baseline") and b.concurrency == r.concurrency
            ),
            None,
        )
        if base is not None and base.per_s > 0:
            found[f"{r.name} / {base.name}"] = r.per_s / base.per_s
    return found


def print_throughput(results: list[ThroughputResult]) -> None:
    width = max(40, *(len(r.name) for r in results))
    print()
    header = (
        f"{'throughput':<{width}} {'sent':>6} {'seconds':>8} {'per s':>7} {'steady/s':>8} "
        f"{'conns':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    found = ratios(results)
    for r in results:
        ratio = next((v for k, v in found.items() if k.startswith(r.name + " / ")), None)
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        steady = f"{r.steady_per_s:.0f}" if r.steady_per_s else "-"
        print(
            f"{r.name:<{width}} {r.received:>6} {r.seconds:>8.2f} {r.per_s:>7.0f} {steady:>8} "
            f"{r.connections:>6} {shown:>6}"
        )
    print("(ratio: deliveries/s over the baseline's at the same concurrency)")
    print()
    print(
        f"{'per delivery':<{width}} {'CPU ms:':>7} {'sender':>7} {'receiver':>8} "
        f"{'postgres':>8} {'total':>7} {'cores busy':>10}   {'pg commits':>10} {'rollbacks':>9}"
    )
    for r in results:
        if not r.received:
            continue
        per = {k: v * 1000 / r.deliveries for k, v in r.cpu_s.items()}
        busy = sum(r.cpu_s.values()) / r.seconds if r.seconds > 0 else 0.0
        xacts = (
            f"{r.commits_per_delivery:>10.2f} {r.rollbacks_per_delivery:>9.2f}"
            if r.name.startswith("pollhook")
            else f"{'-':>10} {'-':>9}"
        )
        print(
            f"{r.name:<{width}} {'':>7} {per['sender']:>7.2f} {per['receiver']:>8.2f} "
            f"{per['postgres']:>8.2f} {sum(per.values()):>7.2f} {busy:>10.2f}   {xacts}"
        )
    print()
    for r in results:
        verdict = "ok" if r.complete else "FAILED"
        extra = f", {r.attempts} attempts, insert {r.insert_s:.2f} s" if r.attempts else ""
        print(
            f"{r.name}: {r.received} received for {r.deliveries}, {r.duplicates} duplicates, "
            f"{r.missing} missing, {r.signatures_checked - r.signatures_failed}/"
            f"{r.signatures_checked} signatures verify, body {r.body_bytes} bytes"
            f"{extra} - {verdict}"
        )
        if r.worker_warnings:
            print(f"  worker warnings: {r.worker_warnings}")
        for note in r.notes:
            print(f"  note: {note}")


# --- the run ----------------------------------------------------------------------------------


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(server, event_loop="uvloop " + importlib.metadata.version("uvloop"))
    conn = await connect(server)
    try:
        meta["postgres_settings"] = {
            name: str(await conn.fetchval(f"SHOW {name}"))
            for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
        print(
            f"Postgres {meta['postgres_settings']}; every process (worker, receiver, sandbox, "
            f"Postgres, this driver) shares the machine's {meta['usable_cores']} core(s).\n"
        )
        latency: LatencyResult | None = None
        rate: RateResult | None = None
        throughput: list[ThroughputResult] = []
        with (
            (workdir / "sandbox.log").open("w") as sandbox_log,
            (workdir / "receiver.log").open("w") as receiver_log,
        ):
            sandbox = await Sandbox.start(minimax_rate=0, log=sandbox_log)
            try:
                receiver = await Receiver.start(receiver_log)
                try:
                    endpoint_id, secret = await add_endpoint(conn, receiver.url(HOOK_PATH))
                    await receiver.configure(secrets={HOOK_PATH: secret})
                    if "latency" in options.phases:
                        latency = await latency_phase(
                            server, sandbox, receiver, conn, secret, options, workdir
                        )
                    if "rate" in options.phases:
                        rate = await rate_phase(
                            server,
                            sandbox,
                            receiver,
                            conn,
                            endpoint_id,
                            secret,
                            options,
                            workdir,
                            Profiler(options.py_spy),
                        )
                    if "throughput" in options.phases:
                        throughput = await throughput_phase(
                            server, sandbox, receiver, conn, endpoint_id, secret, options, workdir
                        )
                finally:
                    await receiver.stop()
            finally:
                await sandbox.stop()
    finally:
        await conn.close()
    if latency is not None:
        print_latency(latency)
    if rate is not None:
        print_rate(rate)
    if throughput:
        print_throughput(throughput)
        found = ratios(throughput)
        if found:
            print()
            for name, value in found.items():
                print(f"{name}: {value:.2f}x")
    ok = (
        (latency is None or latency.complete)
        and (rate is None or rate.complete)
        and all(r.complete for r in throughput)
    )
    return {
        "meta": meta,
        "options": {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(options).items()
        },
        "latency": asdict(latency) if latency is not None else None,
        "rate": asdict(rate) if rate is not None else None,
        "throughput": [asdict(r) for r in throughput],
        "ratios": ratios(throughput),
        "ok": ok,
    }


def _pair(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 2 or parts[0] <= 0 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError("expected LOW,HIGH with 0 < LOW <= HIGH")
    return parts[0], parts[1]


def _phases(text: str) -> set[str]:
    phases = {p.strip() for p in text.split(",") if p.strip()}
    if not phases or phases - {"latency", "rate", "throughput"}:
        raise argparse.ArgumentTypeError("phases are latency, rate and throughput")
    return phases


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_delivery",
        description="Completion-to-delivery latency and delivery throughput of pollhook's "
        "webhooks, each next to a bare httpx POST loop, against a local receiver.",
    )
    parser.add_argument("--tasks", type=int, default=500, help="latency phase: sandbox tasks")
    parser.add_argument(
        "--durations", type=_pair, default=(1.0, 20.0), help="latency: task durations LOW,HIGH s"
    )
    parser.add_argument(
        "--poll-interval",
        type=_pair,
        default=(0.5, 1.0),
        help="latency: the minimax instance's MIN,MAX poll interval in s",
    )
    parser.add_argument(
        "--baseline-gap-ms", type=float, default=10.0, help="latency baseline: pause between POSTs"
    )
    parser.add_argument(
        "--deliveries", type=int, default=10_000, help="throughput: pending deliveries"
    )
    parser.add_argument(
        "--in-flight",
        type=int_list,
        default=[64, 256],
        help="throughput: POLLHOOK_WEBHOOKS__MAX_IN_FLIGHT values (and baseline concurrency)",
    )
    parser.add_argument(
        "--reference-concurrency",
        type=int_list,
        default=[4],
        help="throughput: also run the baseline at these concurrencies, for reference "
        "(httpx's cost per request grows with the connections it holds)",
    )
    parser.add_argument(
        "--phases",
        type=_phases,
        default={"latency", "rate", "throughput"},
        help="latency,rate,throughput",
    )
    parser.add_argument(
        "--rate", type=float, default=100.0, help="rate phase: deliveries committed per second"
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=10.0, help="rate phase: for this long"
    )
    parser.add_argument("--max-seconds", type=float, default=300.0, help="cut-off per phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--py-spy", type=Path, help="record throughput senders with py-spy here")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if (
        args.tasks < 1
        or args.deliveries < 1
        or args.max_seconds <= 0
        or args.rate <= 0
        or args.rate_seconds <= 0
    ):
        parser.error(
            "--tasks, --deliveries, --max-seconds, --rate and --rate-seconds must be positive"
        )
    return Options(
        tasks=args.tasks,
        durations=args.durations,
        poll_interval=args.poll_interval,
        baseline_gap_s=max(0.0, args.baseline_gap_ms / 1000),
        deliveries=args.deliveries,
        in_flight=args.in_flight,
        reference=[c for c in args.reference_concurrency if c not in args.in_flight],
        phases=args.phases,
        max_seconds=args.max_seconds,
        seed=args.seed,
        rate=args.rate,
        rate_seconds=args.rate_seconds,
        py_spy=args.py_spy,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-webhooks-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
        loop_factory=uvloop.new_event_loop,
        tail_lines=15,
    )


if __name__ == "__main__":
    sys.exit(main())
