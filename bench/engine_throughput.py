"""Engine throughput with no rate limit: completed polls per second over 10,000 due tasks,
pollhook's poll engine next to pgqueuer doing the same work, in one run.

Run from the repository root (pgqueuer must be installed: `pip install pgqueuer`):

    python -m bench.engine_throughput [--tasks 10000] [--in-flight 64,256]
        [--pgq-concurrency 64,256] [--pgq-batch 32] [--max-seconds 300] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, temporary directory under /tmp), migrated;
the sandbox (`python -m app.cli sandbox --minimax-rate 0 --jimmy-rate 0`) as a subprocess.
Every phase starts from the same state: the sandbox is reset and given `--tasks` MiniMax tasks
that report Processing for 30 days, and the tasks table is refilled with one row per sandbox
task, status `processing`, already due. Then, measured until every row has `polls >= 1`
(the database is checked every 0.2 s):

1. pollhook: `PollWorker` in this process (the code `pollhook worker` runs), the minimax
   instance pointed at the sandbox with rate_limit_per_s=0 and 3600 s poll intervals, so each
   task is polled exactly once; once per `--in-flight` value (PollSettings.max_in_flight).
2. pgqueuer: one job per task enqueued up front, a QueueManager (asyncpg driver on one
   connection, as in pgqueuer's README) whose entrypoint does the same work: one GET of the
   sandbox's query URL for the task (a shared httpx.AsyncClient) and one UPDATE of the task row
   (polls + 1, last_response, next_poll_at = now() + 1 h, last_polled_at, updated_at) through
   an asyncpg pool of 20 connections (pollhook's SQLAlchemy pool: 10 + 10 overflow). Its
   per-worker cap `max_concurrent_tasks` is set to each `--pgq-concurrency` value.

Both run in this process on the same event loop implementation (asyncio, no uvloop), against
the same sandbox and database. The sandbox counts upstream requests; each phase must make
exactly `--tasks` of them. CPU seconds of this process, the sandbox and Postgres are reported
per poll. The load generator (none here), the engine, the sandbox and Postgres share the
machine's cores: the numbers are a lower bound for a dedicated server.

This is a benchmark, not a test: it prints a table (and optionally writes JSON) and exits
non-zero only when a phase failed (incomplete, or not exactly one upstream query per task).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.config import Settings
from app.core.db import create_engine
from app.core.embedded import EmbeddedPostgres
from app.core.logging import configure_logging
from app.polling.worker import PollWorker
from bench._support import (
    SANDBOX_KEY,
    CpuProbe,
    Sandbox,
    begin,
    connect,
    create_pool,
    int_list,
    load_due_tasks,
    run_benchmark,
    steady_rate,
)

CHECK_EVERY_S = 0.2
POLL_INTERVAL_S = 3600.0
PGQ_ENTRYPOINT = "poll_task"
# pollhook's engine pool: create_engine(pool_size=10) allows 10 + 10 overflow connections.
UPDATE_POOL_SIZE = 20
QUERY_PATH = "/v1/query/t2a_async_query_v2"

PGQ_UPDATE_SQL = """
UPDATE tasks
SET polls = polls + 1,
    last_response = $2::jsonb,
    next_poll_at = now() + interval '1 hour',
    last_polled_at = now(),
    updated_at = now()
WHERE id = $1
"""


@dataclass
class Options:
    tasks: int
    in_flight: list[int]
    pgq_concurrency: list[int]
    pgq_batch: int | None
    pgq_driver: str
    max_seconds: float
    what_if: bool
    json_path: Path | None


@dataclass(frozen=True)
class WhatIf:
    """Suggested engine changes, patched into this process only (app/ is not edited).

    http_gate: at most this many HTTP exchanges at once per
    loop (PollLoop.semaphore, which is max_in_flight as shipped), so httpcore's pool
    never queues requests.
    """

    http_gate: int | None = None

    @property
    def label(self) -> str:
        return f" +gate{self.http_gate}" if self.http_gate else ""


@dataclass
class PhaseResult:
    name: str
    tasks: int
    polled: int
    seconds: float  # start until the check that found every task polled
    first_to_last_write_s: float  # database clock: start until the last row written
    polls_per_s: float
    steady_polls_per_s: float  # between 10 % and 90 % of the tasks polled
    upstream_requests: int
    sum_polls: int
    claims: int  # pollhook: fencing tokens handed out (one per claim)
    complete: bool
    cpu_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def wait_all_polled(
    conn: asyncpg.Connection, total: int, started: float, max_seconds: float
) -> tuple[float | None, list[tuple[float, int]]]:
    """Seconds from `started` until every task has a poll (None if `max_seconds` ran out),
    and the (seconds, polled) samples on the way."""
    samples: list[tuple[float, int]] = []
    deadline = started + max_seconds
    while True:
        polled = int(await conn.fetchval("SELECT count(*) FROM tasks WHERE polls >= 1"))
        now = time.perf_counter()
        samples.append((now - started, polled))
        if polled >= total:
            return now - started, samples
        if now > deadline:
            return None, samples
        await asyncio.sleep(CHECK_EVERY_S)


async def reset_state(sandbox: Sandbox, conn: asyncpg.Connection, tasks: int) -> list[str]:
    await sandbox.reset()
    external_ids = await sandbox.create_processing_tasks(tasks)
    await load_due_tasks(conn, external_ids)
    await conn.execute("CHECKPOINT")
    return external_ids


async def measure(
    name: str,
    *,
    conn: asyncpg.Connection,
    sandbox: Sandbox,
    cpu: CpuProbe,
    options: Options,
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
) -> PhaseResult:
    """Start a poller, wait until every task was polled (bounded), stop it, then count."""
    print(f"  {name}: running ...", flush=True)
    db_start = await conn.fetchval("SELECT clock_timestamp()")
    cpu_before = cpu.sample()
    started = time.perf_counter()
    try:
        await start()
        seconds, samples = await wait_all_polled(conn, options.tasks, started, options.max_seconds)
        cpu_after = cpu.sample()
    finally:
        await stop()
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE polls >= 1) AS polled,
               coalesce(sum(polls), 0) AS sum_polls,
               coalesce(sum(fencing_token), 0) AS claims,
               max(last_polled_at) AS last_write,
               count(*) FILTER (WHERE lease_owner IS NOT NULL) AS leased
        FROM tasks
        """
    )
    stats = await sandbox.key_stats()
    polled = int(row["polled"])
    last_write = row["last_write"]
    first_to_last = (last_write - db_start).total_seconds() if last_write is not None else 0.0
    notes: list[str] = []
    if int(row["leased"]):
        notes.append(f"{row['leased']} rows still leased after the stop")
    if stats["other_keys"]:
        notes.append(f"requests under other keys: {stats['other_keys']}")
    upstream = int(stats["requests"])
    complete = (
        seconds is not None
        and polled == options.tasks
        and upstream == options.tasks
        and int(row["sum_polls"]) == options.tasks
    )
    wall = seconds if seconds is not None else time.perf_counter() - started
    result = PhaseResult(
        name=name,
        tasks=options.tasks,
        polled=polled,
        seconds=wall,
        first_to_last_write_s=first_to_last,
        polls_per_s=polled / first_to_last if first_to_last > 0 else 0.0,
        steady_polls_per_s=steady_rate(samples, options.tasks),
        upstream_requests=upstream,
        sum_polls=int(row["sum_polls"]),
        claims=int(row["claims"]),
        complete=complete,
        cpu_s=CpuProbe.delta(cpu_before, cpu_after),
        notes=notes,
    )
    print(
        f"  {name}: {polled}/{options.tasks} polled in {wall:.2f} s "
        f"({result.polls_per_s:.0f} polls/s), {upstream} upstream requests",
        flush=True,
    )
    return result


# --- pollhook ---------------------------------------------------------------------------------


def pollhook_settings(server: EmbeddedPostgres, sandbox: Sandbox, in_flight: int) -> Settings:
    instance = {
        "base_url": sandbox.base_url,
        "api_key": SANDBOX_KEY,
        "rate_limit_per_s": 0,
        "first_poll_delay_s": 0,
        "min_poll_interval_s": POLL_INTERVAL_S,
        "max_poll_interval_s": POLL_INTERVAL_S,
    }
    return Settings(
        database_url=server.url,
        # jimmy is a built-in instance: point it at the sandbox too (it has no tasks here).
        providers={"minimax": instance, "jimmy": {"base_url": sandbox.base_url}},
        engine={"max_in_flight": in_flight},
        log_level="WARNING",
    )


async def pollhook_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    cpu: CpuProbe,
    options: Options,
    in_flight: int,
    what_if: WhatIf,
) -> PhaseResult:
    await reset_state(sandbox, conn, options.tasks)
    settings = pollhook_settings(server, sandbox, in_flight)
    engine = create_engine(server.url, pool_size=settings.db_pool_size)
    poll_engine = PollWorker(settings, engine)
    if what_if.http_gate:
        for loop in poll_engine.loops.values():
            loop.semaphore = asyncio.Semaphore(what_if.http_gate)
    started = False

    async def start() -> None:
        nonlocal started
        await poll_engine.start()
        started = True

    async def stop() -> None:
        try:
            if started:
                await poll_engine.stop()
            else:
                await poll_engine.close()
        finally:
            await engine.dispose()

    return await measure(
        f"pollhook{what_if.label} max_in_flight={in_flight}",
        conn=conn,
        sandbox=sandbox,
        cpu=cpu,
        options=options,
        start=start,
        stop=stop,
    )


# --- pgqueuer ---------------------------------------------------------------------------------


async def pgqueuer_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    cpu: CpuProbe,
    options: Options,
    concurrency: int,
) -> PhaseResult:
    # Imported here: pgqueuer is a benchmark-only dependency, not one of pollhook's, so the
    # type checker may not find it (then its names are Any; the ignore covers both cases).
    from pgqueuer import (  # type: ignore[import-not-found, unused-ignore]
        AsyncpgDriver,
        AsyncpgPoolDriver,
        Job,
        Queries,
        QueueManager,
    )

    external_ids = await reset_state(sandbox, conn, options.tasks)
    rows = await conn.fetch("SELECT id, external_id FROM tasks")
    assert len(rows) == len(external_ids)

    queue_conn = await connect(server)
    queue_pool: asyncpg.Pool | None = None
    update_pool = await create_pool(server, UPDATE_POOL_SIZE)
    http = httpx.AsyncClient(
        base_url=sandbox.base_url,
        headers={"Authorization": f"Bearer {SANDBOX_KEY}", "Accept": "application/json"},
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=10.0,
    )
    run_task: asyncio.Task[None] | None = None
    try:
        if options.pgq_driver == "pool":
            queue_pool = await create_pool(server, 4)
            queries = Queries(AsyncpgPoolDriver(queue_pool))
        else:
            queries = Queries(AsyncpgDriver(queue_conn))
        if not await queries.has_table(queries.qbe.settings.queue_table):
            await queries.install()
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()
        await queries.enqueue(
            [PGQ_ENTRYPOINT] * len(rows),
            [f"{r['id']} {r['external_id']}".encode() for r in rows],
            [0] * len(rows),
        )
        await conn.execute("ANALYZE")
        qm = QueueManager(queries)
        failures: list[str] = []

        async def poll_task(job: Job) -> None:
            assert job.payload is not None
            task_id, external_id = job.payload.decode().split()
            response = await http.get(QUERY_PATH, params={"task_id": external_id})
            response.raise_for_status()
            body = response.json()
            if body.get("base_resp", {}).get("status_code") != 0:
                failures.append(str(body)[:200])
                raise RuntimeError(f"upstream error: {body}")
            await update_pool.execute(PGQ_UPDATE_SQL, uuid.UUID(task_id), json.dumps(body))

        qm.entrypoint(PGQ_ENTRYPOINT)(poll_task)

        batch = options.pgq_batch or max(1, concurrency // 2)

        async def start() -> None:
            nonlocal run_task
            run_task = asyncio.create_task(
                qm.run(
                    batch_size=batch,
                    max_concurrent_tasks=concurrency,
                    dequeue_timeout=timedelta(seconds=1),
                )
            )
            await asyncio.sleep(0)

        async def stop() -> None:
            qm.shutdown.set()
            if run_task is not None:
                try:
                    await asyncio.wait_for(run_task, 30)
                except TimeoutError:
                    print("  pgqueuer did not shut down within 30 s")

        result = await measure(
            f"pgqueuer concurrency={concurrency} batch={batch}",
            conn=conn,
            sandbox=sandbox,
            cpu=cpu,
            options=options,
            start=start,
            stop=stop,
        )
        if failures:
            result.notes.append(f"{len(failures)} failed jobs, e.g. {failures[0]}")
            result.complete = False
        left = int(await conn.fetchval(f"SELECT count(*) FROM {queries.qbe.settings.queue_table}"))
        if left:
            result.notes.append(f"{left} jobs left in pgqueuer's queue")
        return result
    finally:
        if run_task is not None and not run_task.done():
            run_task.cancel()
            with contextlib.suppress(BaseException):
                await run_task
        await http.aclose()
        await update_pool.close()
        if queue_pool is not None:
            await queue_pool.close()
        await queue_conn.close()


# --- the run ----------------------------------------------------------------------------------


def print_results(results: list[PhaseResult]) -> None:
    header = (
        f"{'':<40} {'polled':>6} {'upstream':>8} {'claims':>6} {'seconds':>8} "
        f"{'polls/s':>8} {'steady/s':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<40} {r.polled:>6} {r.upstream_requests:>8} {r.claims:>6} "
            f"{r.first_to_last_write_s:>8.2f} {r.polls_per_s:>8.0f} {r.steady_polls_per_s:>8.0f}"
        )
    print()
    print(
        f"{'CPU ms per poll':<40} {'engine':>8} {'sandbox':>8} {'postgres':>8} {'total':>8} "
        f"{'cores busy':>10}"
    )
    for r in results:
        if not r.polled:
            continue
        per = {k: v * 1000 / r.polled for k, v in r.cpu_s.items()}
        busy = sum(r.cpu_s.values()) / r.seconds if r.seconds > 0 else 0.0
        print(
            f"{r.name:<40} {per['engine']:>8.2f} {per['sandbox']:>8.2f} {per['postgres']:>8.2f} "
            f"{sum(per.values()):>8.2f} {busy:>10.2f}"
        )
    for r in results:
        for note in r.notes:
            print(f"  note ({r.name}): {note}")


def ratios(results: list[PhaseResult]) -> dict[str, float]:
    ours = [r for r in results if r.name.startswith("pollhook max") and r.polls_per_s > 0]
    theirs = [r for r in results if r.name.startswith("pgqueuer") and r.polls_per_s > 0]
    found: dict[str, float] = {}
    if ours and theirs:
        best_ours = max(r.polls_per_s for r in ours)
        best_theirs = max(r.polls_per_s for r in theirs)
        found["best_pollhook_over_best_pgqueuer"] = best_ours / best_theirs
    for r in ours:
        level = r.name.split("=")[1]
        for t in theirs:
            if t.name.split("=")[1].split()[0] == level:
                found[f"pollhook/pgqueuer at {level}"] = r.polls_per_s / t.polls_per_s
    return found


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    pgqueuer: str | None = None
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        pgqueuer = importlib.metadata.version("pgqueuer")
    meta = await begin(server, pgqueuer=pgqueuer, tasks=options.tasks, in_flight=options.in_flight)
    print(
        f"{options.tasks} due tasks per phase, no rate limit; pollhook max_in_flight "
        f"{options.in_flight}, pgqueuer {pgqueuer or '(missing)'} "
        f"max_concurrent_tasks {options.pgq_concurrency} (driver: {options.pgq_driver}).\n"
        "The engine (in this process), the sandbox and Postgres share the machine's "
        f"{meta['usable_cores']} core(s).\n"
    )
    configure_logging("console", "WARNING")
    results: list[PhaseResult] = []
    with (workdir / "sandbox.log").open("w") as log:
        sandbox = await Sandbox.start(minimax_rate=0, log=log)
        conn = await connect(server)
        try:
            cpu = CpuProbe(
                server.server.get_pid(), {"engine": os.getpid(), "sandbox": sandbox.process.pid}
            )
            for in_flight in options.in_flight:
                results.append(
                    await pollhook_phase(server, sandbox, conn, cpu, options, in_flight, WhatIf())
                )
            for concurrency in options.pgq_concurrency:
                results.append(
                    await pgqueuer_phase(server, sandbox, conn, cpu, options, concurrency)
                )
            if options.what_if:
                for what_if in (WhatIf(http_gate=16),):
                    for in_flight in options.in_flight:
                        results.append(
                            await pollhook_phase(
                                server, sandbox, conn, cpu, options, in_flight, what_if
                            )
                        )
        finally:
            await conn.close()
            await sandbox.stop()
    found = ratios(results)
    print_results(results)
    if found:
        print()
        for name, value in found.items():
            print(f"{name}: {value:.2f}x")
    print()
    for r in results:
        verdict = "ok" if r.complete else "FAILED"
        print(
            f"{r.name}: {r.upstream_requests} upstream queries for {r.tasks} tasks "
            f"(sum of polls {r.sum_polls}) - {verdict}"
        )
    return {
        "meta": meta,
        "results": [asdict(r) for r in results],
        "ratios": found,
        "ok": bool(results) and all(r.complete for r in results),
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine_throughput",
        description="Polls per second with no rate limit: pollhook's engine next to pgqueuer "
        "doing the same GET + UPDATE per task, against the sandbox and a throwaway Postgres.",
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="due tasks per phase")
    parser.add_argument(
        "--in-flight", type=int_list, default=[64, 256], help="pollhook max_in_flight values"
    )
    parser.add_argument(
        "--pgq-concurrency",
        type=int_list,
        default=None,
        help="pgqueuer max_concurrent_tasks values (default: the --in-flight values)",
    )
    parser.add_argument(
        "--pgq-batch", type=int, default=None, help="pgqueuer batch_size (default: half the cap)"
    )
    parser.add_argument(
        "--pgq-driver",
        choices=["connection", "pool"],
        default="connection",
        help="pgqueuer's queue driver: AsyncpgDriver on one connection, or AsyncpgPoolDriver",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0, help="cut-off for each phase")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also run pollhook with suggested engine changes patched in (see WhatIf)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.max_seconds <= 0:
        parser.error("--tasks and --max-seconds must be positive")
    return Options(
        tasks=args.tasks,
        in_flight=args.in_flight,
        pgq_concurrency=args.pgq_concurrency
        if args.pgq_concurrency is not None
        else args.in_flight,
        pgq_batch=args.pgq_batch,
        pgq_driver=args.pgq_driver,
        max_seconds=args.max_seconds,
        what_if=args.what_if,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-engine-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
        tail_lines=20,
    )


if __name__ == "__main__":
    sys.exit(main())
