"""Registration throughput and latency: pollhook's POST /v1/tasks next to a bare asyncpg floor.

Run from the repository root:

    python -m bench.register [--requests 5000] [--warmup 200] [--concurrency 32] [--json PATH]

It starts a throwaway embedded Postgres the way the service's default does (unix socket only,
a temporary data directory under /tmp, deleted afterwards) and migrates it, then measures,
in one run and against that one server:

1. the baseline: 32 asyncpg connections each running the registration INSERT
   (`INSERT ... ON CONFLICT (tenant, provider, external_id) DO NOTHING RETURNING *`, the
   statement pollhook sends) in a loop, one round trip per row;
2. pollhook: the real API (`python -m app.cli api`) as a subprocess pointed at the same
   database, driven by 32 concurrent HTTP clients (httpx, one keep-alive connection each)
   posting unique MiniMax task IDs.

Each phase runs a discarded warm-up, then a fixed number of operations, and is cut off after
`--max-seconds` whatever happens. The load generator, the API server and Postgres all share
the machine's cores, so the numbers are a lower bound for a dedicated server; to show who
used the CPU, the CPU time of each (this process, the API process, every Postgres process)
is measured over the measured stretch and reported per operation.

This is a benchmark, not a test: it prints a table (and optionally writes JSON) and exits
non-zero only when something failed (errors, missing rows, a server that would not start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.core.embedded import EmbeddedPostgres
from bench._support import (
    CpuProbe,
    begin,
    connect,
    create_pool,
    free_port,
    percentile,
    pollhook_env,
    run_benchmark,
    start_api,
    stop_process,
)

BASELINE_TENANT = "bench-baseline"
POLLHOOK_TENANT = "bench"
PROVIDER = "minimax"
METADATA: dict[str, Any] = {"source": "bench.register", "voice": "female-tianmei", "n": 1}
# The MiniMax instance's defaults (app.core.config.KIND_DEFAULTS), written by the baseline
# the way pollhook computes them on registration.
FIRST_POLL_DELAY_S = 3.0
DEADLINE_S = 6 * 3600

BASELINE_SQL = """
INSERT INTO tasks (
    id, tenant, provider, external_id, status, metadata, callback_url, deadline_s,
    created_at, updated_at, next_poll_at, deadline_at
)
VALUES (
    $1, $2, $3, $4, 'pending', $5::jsonb, NULL, NULL,
    now(), now(), now() + make_interval(secs => $6), now() + make_interval(secs => $7)
)
ON CONFLICT (tenant, provider, external_id) DO NOTHING
RETURNING *
"""

READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0

Operation = Callable[[int], Awaitable[str | None]]


@dataclass
class Options:
    requests: int
    warmup: int
    concurrency: int
    max_seconds: float
    json_path: Path | None


@dataclass
class PhaseResult:
    name: str
    requested: int
    ops: int
    errors: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    complete: bool
    # CPU seconds used over the measured stretch, per component (see CpuProbe).
    cpu_s: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


# --- measuring ---------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    cause = exc.__cause__ or exc.__context__
    return f"{text} (from {type(cause).__name__}: {cause})" if cause is not None else text


class Recorder:
    """Latencies and errors of one stretch of operations."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.errors = 0
        self.error_samples: list[str] = []

    def error(self, description: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(description)


async def drive(
    operation: Operation, ids: Iterator[int], *, count: int, concurrency: int, max_seconds: float
) -> tuple[Recorder, float, bool]:
    """Run `operation(id)` `count` times from `concurrency` workers; each returns None on
    success or an error description. Returns the recorder, the wall time and whether all
    `count` operations ran before `max_seconds` passed."""
    recorder = Recorder()
    remaining = itertools.islice(ids, count)  # shared: each id is taken by one worker
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        for external_id in remaining:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter_ns()
            try:
                problem = await operation(external_id)
            except Exception as exc:  # a benchmark counts failures, it does not stop on one
                problem = _describe(exc)
            elapsed = time.perf_counter_ns() - started
            if problem is None:
                recorder.latencies_ns.append(elapsed)
            else:
                recorder.error(problem)

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        # The per-operation timeouts bound each worker; this bounds the whole stretch.
        await asyncio.wait_for(asyncio.gather(*workers), max_seconds + REQUEST_TIMEOUT_S + 5)
    except TimeoutError:
        recorder.error("stretch timed out")
    seconds = time.perf_counter() - started
    done = len(recorder.latencies_ns) + recorder.errors
    return recorder, seconds, done >= count


async def run_phase(
    name: str, operation: Operation, options: Options, cpu: CpuProbe
) -> PhaseResult:
    """A discarded warm-up, then the measured stretch; external IDs count up from 1."""
    ids = itertools.count(1)
    print(f"  {name}: warm-up ({options.warmup} ops)...", flush=True)
    warm, _, _ = await drive(
        operation,
        ids,
        count=options.warmup,
        concurrency=options.concurrency,
        max_seconds=options.max_seconds,
    )
    if warm.errors:
        print(f"  {name}: {warm.errors} warm-up error(s), e.g. {warm.error_samples[0]}")
    print(f"  {name}: measuring ({options.requests} ops)...", flush=True)
    cpu_before = cpu.sample()
    recorder, seconds, complete = await drive(
        operation,
        ids,
        count=options.requests,
        concurrency=options.concurrency,
        max_seconds=options.max_seconds,
    )
    cpu_after = cpu.sample()
    latencies_ms = sorted(ns / 1e6 for ns in recorder.latencies_ns)
    ops = len(latencies_ms)
    return PhaseResult(
        name=name,
        requested=options.requests,
        ops=ops,
        errors=recorder.errors + warm.errors,
        seconds=seconds,
        ops_per_s=ops / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        max_ms=latencies_ms[-1] if latencies_ms else 0.0,
        complete=complete and recorder.errors + warm.errors == 0,
        cpu_s={k: cpu_after[k] - cpu_before[k] for k in cpu_after},
        error_samples=warm.error_samples + recorder.error_samples,
    )


# --- baseline: bare asyncpg --------------------------------------------------------------------


async def baseline(server: EmbeddedPostgres, options: Options) -> PhaseResult:
    pool = await create_pool(server, options.concurrency)
    metadata = json.dumps(METADATA, separators=(",", ":"))
    try:
        # One connection per concurrent client, held for the whole phase: no pool overhead.
        connections = [await pool.acquire() for _ in range(options.concurrency)]
        free = list(connections)

        async def insert(external_id: int) -> str | None:
            conn = free.pop()
            try:
                row = await conn.fetchrow(
                    BASELINE_SQL,
                    uuid.uuid4(),
                    BASELINE_TENANT,
                    PROVIDER,
                    str(external_id),
                    metadata,
                    FIRST_POLL_DELAY_S,
                    float(DEADLINE_S),
                )
            finally:
                free.append(conn)
            return None if row is not None else f"external_id {external_id}: not inserted"

        try:
            cpu = CpuProbe(server.server.get_pid(), {"load generator": os.getpid()})
            return await run_phase("asyncpg INSERT (baseline)", insert, options, cpu)
        finally:
            for conn in connections:
                await pool.release(conn)
    finally:
        await pool.close()


# --- pollhook: the real API in a subprocess ----------------------------------------------------


async def pollhook(server: EmbeddedPostgres, options: Options, log: TextIO) -> PhaseResult:
    api_key = secrets.token_hex(16)  # 32 characters
    port = free_port()
    env = pollhook_env(
        server,
        api_keys=f"{POLLHOOK_TENANT}:{api_key}",
        # The per-tenant request limit would answer 429 to most of the load.
        api_rate_limit_per_s=0,
    )
    process = await start_api(env, port, log, timeout_s=READY_TIMEOUT_S)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # One client with one keep-alive connection per concurrent caller: a single
            # shared client's connection pool costs about twice the CPU per request on this
            # side and lengthens the latency tail (see docs/benchmarks.md).
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}",
                        headers={"Authorization": f"Bearer {api_key}"},
                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                        timeout=REQUEST_TIMEOUT_S,
                    )
                )
                for _ in range(options.concurrency)
            ]
            free = list(clients)

            async def register(external_id: int) -> str | None:
                http = free.pop()
                try:
                    response = await http.post(
                        "/v1/tasks",
                        json={
                            "provider": PROVIDER,
                            "external_id": external_id,
                            "metadata": METADATA,
                        },
                    )
                finally:
                    free.append(http)
                if response.status_code == 201:
                    return None
                return f"external_id {external_id}: HTTP {response.status_code} {response.text}"

            cpu = CpuProbe(
                server.server.get_pid(),
                {"load generator": os.getpid(), "pollhook API": process.pid},
            )
            return await run_phase("pollhook POST /v1/tasks", register, options, cpu)
    finally:
        await stop_process(process, "the API", signal.SIGINT)


# --- the run -----------------------------------------------------------------------------------


async def _query(server: EmbeddedPostgres, sql: str) -> list[Any]:
    conn = await connect(server)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def print_results(results: list[PhaseResult], ratios: dict[str, float]) -> None:
    header = (
        f"{'':<27} {'ops':>6} {'errors':>6} {'seconds':>8} {'ops/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<27} {r.ops:>6} {r.errors:>6} {r.seconds:>8.2f} {r.ops_per_s:>8.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    if ratios:
        print()
        print(
            f"pollhook / baseline: throughput {ratios['throughput']:.3f}x, "
            f"p99 latency {ratios['p99']:.1f}x"
        )
    print()
    print(
        f"{'CPU ms per op':<27} {'load gen':>8} {'API':>8} {'postgres':>8} {'total':>8} "
        f"{'cores busy':>10}"
    )
    for r in results:
        if not r.ops:
            continue
        per_op = {k: v * 1000 / r.ops for k, v in r.cpu_s.items()}
        api = f"{per_op['pollhook API']:>8.2f}" if "pollhook API" in per_op else f"{'-':>8}"
        busy = sum(r.cpu_s.values()) / r.seconds if r.seconds > 0 else 0.0
        print(
            f"{r.name:<27} {per_op['load generator']:>8.2f} {api} {per_op['postgres']:>8.2f} "
            f"{sum(per_op.values()):>8.2f} {busy:>10.2f}"
        )
    for r in results:
        for sample in r.error_samples:
            print(f"  error ({r.name}): {sample}")


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(
        server, requests=options.requests, warmup=options.warmup, concurrency=options.concurrency
    )
    print(
        f"{options.concurrency} concurrent clients, {options.warmup} warm-up + "
        f"{options.requests} measured operations per phase.\n"
        "The load generator, the pollhook API and Postgres share this machine's "
        f"{meta['usable_cores']} core(s): the numbers are a lower bound for a dedicated server."
    )
    print()

    base = await baseline(server, options)
    with (workdir / "api.log").open("w") as log:
        ours = await pollhook(server, options, log)
    ratios: dict[str, float] = {}
    if base.ops_per_s > 0 and base.p99_ms > 0:
        ratios = {"throughput": ours.ops_per_s / base.ops_per_s, "p99": ours.p99_ms / base.p99_ms}
    print_results([base, ours], ratios)

    counted = await _query(server, "SELECT tenant, count(*) FROM tasks GROUP BY tenant")
    rows = {str(tenant): int(n) for tenant, n in counted}
    expected = options.warmup + options.requests
    print()
    rows_ok = True
    for tenant, result in ((BASELINE_TENANT, base), (POLLHOOK_TENANT, ours)):
        found = rows.get(tenant, 0)
        rows_ok = rows_ok and found == expected
        verdict = "ok" if found == expected else "MISMATCH"
        print(f"rows in tasks for {result.name}: {found} ({verdict}, expected {expected})")
    return {
        "meta": meta,
        "results": [asdict(base), asdict(ours)],
        "ratios": ratios,
        "rows": rows,
        "ok": rows_ok and base.complete and ours.complete,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.register",
        description="Registration throughput and p99 latency: pollhook's POST /v1/tasks "
        "next to a bare asyncpg INSERT loop, against a throwaway embedded Postgres.",
    )
    parser.add_argument("--requests", type=int, default=5000, help="measured ops per phase")
    parser.add_argument("--warmup", type=int, default=200, help="discarded ops per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="cut-off for each stretch of ops"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.concurrency < 1 or args.max_seconds <= 0:
        parser.error("--requests, --concurrency and --max-seconds must be positive")
    return Options(
        requests=args.requests,
        warmup=args.warmup,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
        tail_lines=20,
    )


if __name__ == "__main__":
    sys.exit(main())
