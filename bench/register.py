"""Registration throughput and latency: pollhook's POST /v1/tasks and POST /v1/tasks/batch
next to bare asyncpg floors.

Run from the repository root:

    python -m bench.register [--requests 5000] [--warmup 200] [--concurrency 32]
                             [--batches 20] [--batch-size 1000] [--batch-concurrency 4]
                             [--json PATH]

It starts a throwaway embedded Postgres the way the service's default does (unix socket only,
a temporary data directory under /tmp, deleted afterwards) and migrates it, then measures,
in one run and against that one server:

1. the baseline: 32 asyncpg connections each running the registration INSERT
   (`INSERT ... ON CONFLICT (tenant, provider, external_id) DO NOTHING RETURNING *`, the
   statement pollhook sends) in a loop, one round trip per row;
2. the batch baseline: 4 asyncpg connections each inserting 1,000 rows per statement
   (the same INSERT over `unnest` of one array per column, `--batch-size` rows at a time);
3. pollhook: the real API (`python -m app.cli api`) as a subprocess pointed at the same
   database, driven by 32 concurrent HTTP clients (one keep-alive HTTP/1.1 connection each,
   see `RawHttp`) posting unique MiniMax task IDs to POST /v1/tasks;
4. then 4 of those clients each posting `--batch-size` unique tasks at a time to
   POST /v1/tasks/batch.

The per-tenant API rate limit is disabled in the API under test (it would answer 429 to
most of the load). The batch phases count batches as operations and report tasks/s too.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from app.core.embedded import EmbeddedPostgres
from app.tasks.schemas import MAX_BATCH_TASKS
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
# The batch phases register their own tasks (their external IDs count from 1 as well).
BATCH_BASELINE_TENANT = "bench-batch-baseline"
BATCH_TENANT = "bench-batch"
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

# The same rows, many per statement: one array per column.
BASELINE_BATCH_SQL = """
INSERT INTO tasks (
    id, tenant, provider, external_id, status, metadata, callback_url, deadline_s,
    created_at, updated_at, next_poll_at, deadline_at
)
SELECT
    id, $2, $3, external_id, 'pending', $5::jsonb, NULL, NULL,
    now(), now(), now() + make_interval(secs => $6), now() + make_interval(secs => $7)
FROM unnest($1::uuid[], $4::text[]) AS given(id, external_id)
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
    batches: int = 20
    batch_size: int = 1000
    batch_warmup: int = 2
    batch_concurrency: int = 4

    def of_batches(self) -> Options:
        """The batch phases' stretch: `batches` operations of `batch_size` tasks each."""
        return replace(
            self,
            requests=self.batches,
            warmup=self.batch_warmup,
            concurrency=self.batch_concurrency,
        )


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
    # Tasks registered per operation (the batch size in the batch phases).
    tasks_per_op: int = 1
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
    name: str, operation: Operation, options: Options, cpu: CpuProbe, *, tasks_per_op: int = 1
) -> PhaseResult:
    """A discarded warm-up, then the measured stretch; operations are numbered from 1 (the
    external ID, or the batch number)."""
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
        tasks_per_op=tasks_per_op,
    )


def batch_ids(number: int, size: int) -> range:
    """The external IDs of batch `number` (from 1): `size` of them, unique across batches."""
    return range((number - 1) * size + 1, number * size + 1)


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


async def baseline_batch(server: EmbeddedPostgres, options: Options) -> PhaseResult:
    batches = options.of_batches()
    pool = await create_pool(server, batches.concurrency)
    metadata = json.dumps(METADATA, separators=(",", ":"))
    try:
        connections = [await pool.acquire() for _ in range(batches.concurrency)]
        free = list(connections)

        async def insert(number: int) -> str | None:
            ids = batch_ids(number, options.batch_size)
            conn = free.pop()
            try:
                rows = await conn.fetch(
                    BASELINE_BATCH_SQL,
                    [uuid.uuid4() for _ in ids],
                    BATCH_BASELINE_TENANT,
                    PROVIDER,
                    [str(i) for i in ids],
                    metadata,
                    FIRST_POLL_DELAY_S,
                    float(DEADLINE_S),
                )
            finally:
                free.append(conn)
            return None if len(rows) == len(ids) else f"batch {number}: {len(rows)} inserted"

        try:
            cpu = CpuProbe(server.server.get_pid(), {"load generator": os.getpid()})
            return await run_phase(
                "asyncpg multi-row INSERT",
                insert,
                batches,
                cpu,
                tasks_per_op=options.batch_size,
            )
        finally:
            for conn in connections:
                await pool.release(conn)
    finally:
        await pool.close()


# --- pollhook: the real API in a subprocess ----------------------------------------------------


class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs prepared JSON bytes and reads the
    answer (Content-Length bodies, as the API sends them).

    The load generator shares the machine's cores with the server it measures: httpx cost
    about 0.7 ms of CPU per request here, half of what the API itself spent, against
    0.09 ms for the baseline's asyncpg client. This one costs about 0.1 ms, so what the
    single phase measures is the server."""

    def __init__(self, port: int, authorization: str) -> None:
        self.port = port
        self.head = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: {authorization}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            if self.writer is None or self.reader is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(
                b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                % (path.encode(), self.head, len(body), body)
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            headers = dict(line.split(b":", 1) for line in lines[1:] if line)
            fields = {k.strip().lower(): v.strip() for k, v in headers.items()}
            answer = await self.reader.readexactly(int(fields[b"content-length"]))
            if fields.get(b"connection", b"").lower() == b"close":
                await self.close()
            return status, answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def pollhook(
    server: EmbeddedPostgres, options: Options, log: TextIO
) -> tuple[PhaseResult, PhaseResult]:
    """POST /v1/tasks, then POST /v1/tasks/batch, against one API process."""
    api_key = secrets.token_hex(16)  # 32 characters
    batch_key = secrets.token_hex(16)
    port = free_port()
    env = pollhook_env(
        server,
        api_keys=f"{POLLHOOK_TENANT}:{api_key},{BATCH_TENANT}:{batch_key}",
        # The per-tenant request limit would answer 429 to most of the load.
        api_rate_limit_per_s=0,
        # As many pooled connections as concurrent clients, as the baseline has: a smaller
        # pool opens and closes a backend for the requests over it.
        db_pool_size=options.concurrency,
    )
    process = await start_api(env, port, log, timeout_s=READY_TIMEOUT_S)
    try:
        clients = [RawHttp(port, f"Bearer {api_key}") for _ in range(options.concurrency)]
        batch_clients = [
            RawHttp(port, f"Bearer {batch_key}") for _ in range(options.batch_concurrency)
        ]
        free = list(clients)
        free_batch = list(batch_clients)
        try:

            async def register(external_id: int) -> str | None:
                body = json.dumps(
                    {"provider": PROVIDER, "external_id": external_id, "metadata": METADATA}
                ).encode()
                http = free.pop()
                try:
                    status, answer = await http.post("/v1/tasks", body)
                except BaseException:
                    await http.close()
                    raise
                finally:
                    free.append(http)
                if status == 201:
                    return None
                return f"external_id {external_id}: HTTP {status} {answer.decode()}"

            async def register_batch(number: int) -> str | None:
                ids = batch_ids(number, options.batch_size)
                body = json.dumps(
                    {
                        "tasks": [
                            {"provider": PROVIDER, "external_id": i, "metadata": METADATA}
                            for i in ids
                        ]
                    }
                ).encode()
                http = free_batch.pop()
                try:
                    status, answer = await http.post("/v1/tasks/batch", body)
                except BaseException:
                    await http.close()
                    raise
                finally:
                    free_batch.append(http)
                if status != 200:
                    return f"batch {number}: HTTP {status} {answer[:300].decode()}"
                statuses = [r["status"] for r in json.loads(answer)["results"]]
                created = statuses.count("created")
                return None if created == len(ids) else f"batch {number}: {created} created"

            cpu = CpuProbe(
                server.server.get_pid(),
                {"load generator": os.getpid(), "pollhook API": process.pid},
            )
            single = await run_phase("pollhook POST /v1/tasks", register, options, cpu)
            batched = await run_phase(
                "pollhook POST /v1/tasks/batch",
                register_batch,
                options.of_batches(),
                cpu,
                tasks_per_op=options.batch_size,
            )
            return single, batched
        finally:
            for http in clients + batch_clients:
                await http.close()
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
        f"{'':<30} {'ops':>6} {'errors':>6} {'seconds':>8} {'ops/s':>8} {'tasks/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<30} {r.ops:>6} {r.errors:>6} {r.seconds:>8.2f} {r.ops_per_s:>8.0f} "
            f"{r.ops_per_s * r.tasks_per_op:>8.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    if "throughput" in ratios:
        print()
        print(
            f"pollhook single / baseline: throughput {ratios['throughput']:.3f}x, "
            f"p99 latency {ratios['p99']:.1f}x"
        )
    if "batch_throughput" in ratios:
        print(
            f"pollhook batch / multi-row INSERT: throughput {ratios['batch_throughput']:.3f}x, "
            f"p99 latency {ratios['batch_p99']:.1f}x"
        )
    print()
    print(
        f"{'CPU ms per task':<30} {'load gen':>8} {'API':>8} {'postgres':>8} {'total':>8} "
        f"{'cores busy':>10}"
    )
    for r in results:
        if not r.ops:
            continue
        tasks = r.ops * r.tasks_per_op
        per_task = {k: v * 1000 / tasks for k, v in r.cpu_s.items()}
        api = f"{per_task['pollhook API']:>8.3f}" if "pollhook API" in per_task else f"{'-':>8}"
        busy = sum(r.cpu_s.values()) / r.seconds if r.seconds > 0 else 0.0
        print(
            f"{r.name:<30} {per_task['load generator']:>8.3f} {api} "
            f"{per_task['postgres']:>8.3f} {sum(per_task.values()):>8.3f} {busy:>10.2f}"
        )
    for r in results:
        for sample in r.error_samples:
            print(f"  error ({r.name}): {sample}")


def _ratios(ours: PhaseResult, base: PhaseResult) -> tuple[float, float] | None:
    if base.ops_per_s > 0 and base.p99_ms > 0:
        return ours.ops_per_s / base.ops_per_s, ours.p99_ms / base.p99_ms
    return None


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(
        server,
        requests=options.requests,
        warmup=options.warmup,
        concurrency=options.concurrency,
        batches=options.batches,
        batch_size=options.batch_size,
        batch_warmup=options.batch_warmup,
        batch_concurrency=options.batch_concurrency,
    )
    print(
        f"{options.concurrency} concurrent clients, {options.warmup} warm-up + "
        f"{options.requests} measured operations per single phase; "
        f"{options.batch_concurrency} clients, {options.batch_warmup} warm-up + "
        f"{options.batches} measured batches of {options.batch_size} per batch phase.\n"
        "The load generator, the pollhook API and Postgres share this machine's "
        f"{meta['usable_cores']} core(s): the numbers are a lower bound for a dedicated server."
    )
    print()

    base = await baseline(server, options)
    base_batch = await baseline_batch(server, options)
    with (workdir / "api.log").open("w") as log:
        ours, ours_batch = await pollhook(server, options, log)
    ratios: dict[str, float] = {}
    if single := _ratios(ours, base):
        ratios["throughput"], ratios["p99"] = single
    if batched := _ratios(ours_batch, base_batch):
        ratios["batch_throughput"], ratios["batch_p99"] = batched
    results = [base, ours, base_batch, ours_batch]
    print_results(results, ratios)

    counted = await _query(server, "SELECT tenant, count(*) FROM tasks GROUP BY tenant")
    rows = {str(tenant): int(n) for tenant, n in counted}
    single_rows = options.warmup + options.requests
    batch_rows = (options.batch_warmup + options.batches) * options.batch_size
    print()
    rows_ok = True
    for tenant, result, expected in (
        (BASELINE_TENANT, base, single_rows),
        (POLLHOOK_TENANT, ours, single_rows),
        (BATCH_BASELINE_TENANT, base_batch, batch_rows),
        (BATCH_TENANT, ours_batch, batch_rows),
    ):
        found = rows.get(tenant, 0)
        rows_ok = rows_ok and found == expected
        verdict = "ok" if found == expected else "MISMATCH"
        print(f"rows in tasks for {result.name}: {found} ({verdict}, expected {expected})")
    return {
        "meta": meta,
        "results": [asdict(r) for r in results],
        "ratios": ratios,
        "rows": rows,
        "ok": rows_ok and all(r.complete for r in results),
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.register",
        description="Registration throughput and p99 latency: pollhook's POST /v1/tasks "
        "next to a bare asyncpg INSERT loop, and POST /v1/tasks/batch next to a bare "
        "multi-row INSERT, against a throwaway embedded Postgres.",
    )
    parser.add_argument("--requests", type=int, default=5000, help="measured ops per phase")
    parser.add_argument("--warmup", type=int, default=200, help="discarded ops per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="cut-off for each stretch of ops"
    )
    parser.add_argument("--batches", type=int, default=20, help="measured batches per phase")
    parser.add_argument("--batch-size", type=int, default=1000, help="tasks per batch (≤1000)")
    parser.add_argument("--batch-warmup", type=int, default=2, help="discarded batches")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="concurrent batch clients")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.concurrency < 1 or args.max_seconds <= 0:
        parser.error("--requests, --concurrency and --max-seconds must be positive")
    if not 1 <= args.batch_size <= MAX_BATCH_TASKS:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH_TASKS}")
    if args.batches < 1 or args.batch_warmup < 0 or args.batch_concurrency < 1:
        parser.error("--batches and --batch-concurrency must be positive")
    return Options(
        requests=args.requests,
        warmup=args.warmup,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        json_path=args.json,
        batches=args.batches,
        batch_size=args.batch_size,
        batch_warmup=args.batch_warmup,
        batch_concurrency=args.batch_concurrency,
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
