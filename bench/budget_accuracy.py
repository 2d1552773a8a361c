"""Budget accuracy: how close pollhook's shared request budget gets to a provider's limit,
and whether it ever goes over, with one and with three worker replicas.

Run from the repository root:

    python -m bench.budget_accuracy [--tasks 1000] [--rate 10] [--replicas 1,3] [--cpu-hog N]
        [--sandbox-nice N] [--sandbox-fifo] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, temporary directory under /tmp), migrated;
the sandbox (`python -m app.cli sandbox --minimax-rate RATE`) as a subprocess, which answers
MiniMax's 1002 "rate limit exceeded" to any request past RATE in a sliding 1-second window.
For each replica count the sandbox is reset and given `--tasks` MiniMax tasks that report
Processing for 30 days, the tasks table is refilled with one due row per sandbox task
(status `processing`), the shared budget row (provider_state) is dropped, and then that many
`pollhook worker` subprocesses run against the same database with the minimax instance
pointed at the sandbox (rate_limit_per_s=RATE, 3600 s poll intervals, first poll at once), so
every task needs exactly one request. The run ends when every task has been polled once
(checked every 0.5 s) or after `--max-seconds`; the workers are stopped with SIGTERM.

Measured, from the sandbox's own counters for the key (it stamps every arrival):

* achieved rate while the backlog lasts: requests per second over the whole calendar seconds
  strictly between the first and the last request (the two partial seconds at the ends are
  left out); the target is >= 97 % of the limit (issue 13; the spacing's ceiling is 97.6 %);
* violations: the most requests in any sliding 1-second window (exact, from the arrival
  times), calendar seconds with more than RATE requests, and 1002 answers; the target is
  none of them;
* the shortest time in which one request more than the limit arrived (under 1 s is a
  violation; the rules keep the send checks of any 11 requests at least 1.017 s apart at
  10/s, docs/architecture.md "Why the rate budget cannot be exceeded");
* the workers' own share of the arrival delay: from each request's last send check to its
  headers being handed to the socket (`pollhook_upstream_send_delay_seconds`, from each
  worker's /metrics), against the `ARRIVAL_JITTER_S` margin (17 ms);
* claims per task (sum of fencing tokens): more than one means a task was claimed again
  after a missed send slot or an expired lease.

`--cpu-hog N` runs N processes that only burn CPU beside everything: the budget must still
hold (invariant 4) on a starved machine. `--sandbox-nice N` runs the sandbox at nice N
(negative needs root) while the workers, Postgres and the hogs keep nice 0: a real upstream
has CPUs of its own, and the sandbox's arrival stamps otherwise carry its own scheduling
delay. The default, 0, starves it with the rest, which can only count more violations;
-10 keeps its own part small but did not end the windows over the limit beside two hogs
(docs/benchmarks.md, "Whose delay: the worker's or the sandbox's"). `--sandbox-fifo` runs
the sandbox's threads on the real-time SCHED_FIFO policy instead (needs root): woken by a
request, it runs at once, ahead of every ordinary process, so its stamps are the arrivals
and not the moments a starved sandbox got round to them. It is the stand-in for an upstream
with CPUs of its own; the workers, Postgres and the hogs stay on the ordinary policy.

This is a benchmark, not a test: it prints a table (and optionally writes JSON) and exits
non-zero only when a run failed to finish or a worker failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from app.core.embedded import EmbeddedPostgres
from bench._support import (
    CpuProbe,
    Sandbox,
    begin,
    connect,
    count_warnings,
    cpu_hog,
    free_port,
    int_list,
    load_due_tasks,
    poll_metrics,
    pollhook_env,
    run_benchmark,
    run_first,
    send_delay_summary,
    spawn,
    stop_process,
)

CHECK_EVERY_S = 0.5
POLL_INTERVAL_S = 3600
TARGET_SHARE = 0.97


@dataclass
class Options:
    tasks: int
    rate: float
    replicas: list[int]
    max_seconds: float | None
    json_path: Path | None
    cpu_hog: int
    sandbox_nice: int
    sandbox_fifo: bool


@dataclass
class RunResult:
    replicas: int
    tasks: int
    polled: int  # tasks with at least one request sent
    answered: int  # tasks whose request got a real status (not a 1002)
    seconds: float
    requests: int
    rejected_1002: int
    max_in_any_1s_window: int
    shortest_span_over_limit_s: float | None  # the least time RATE + 1 requests arrived in
    seconds_over_limit: int
    full_seconds: int
    steady_rate: float  # requests per full calendar second between the first and the last
    steady_share: float  # steady_rate / limit
    lowest_full_second: int
    highest_second: int
    overall_rate: float  # requests / calendar seconds from the first to the last request
    goodput: float  # tasks answered per second, first answer to the last (or the cut-off)
    wasted_requests: int  # requests whose answer was never applied (claim lost meanwhile)
    max_booked_ahead_s: float  # furthest the shared budget was booked ahead of now
    max_claims_per_task: int
    claims: int
    worker_exit_codes: list[int | None]
    worker_warnings: dict[str, int]
    per_second_histogram: dict[int, int]  # requests in a second -> how many seconds
    complete: bool
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Send check to headers written, all workers: requests, p50/p99/max bucket bounds (s).
    send_delay: dict[str, float] = field(default_factory=dict)


async def start_workers(
    env: dict[str, str], logs: Sequence[TextIO], metrics_ports: Sequence[int]
) -> list[asyncio.subprocess.Process]:
    workers: list[asyncio.subprocess.Process] = []
    try:
        for log, port in zip(logs, metrics_ports, strict=True):
            worker_env = {**env, "POLLHOOK_METRICS_PORT": str(port)}
            workers.append(await spawn("app.cli", "worker", env=worker_env, log=log))
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def stop_workers(workers: list[asyncio.subprocess.Process]) -> list[int | None]:
    await asyncio.gather(
        *(stop_process(w, f"worker {i + 1}") for i, w in enumerate(workers)),
        return_exceptions=True,
    )
    return [w.returncode for w in workers]


def analyse_seconds(per_second: dict[str, int], rate: float) -> dict[str, Any]:
    counts = {int(second): n for second, n in per_second.items()}
    if not counts:
        return {"full": [], "over": 0}
    first, last = min(counts), max(counts)
    # Every calendar second strictly between the first and the last request, empty ones too.
    full = [counts.get(second, 0) for second in range(first + 1, last)]
    return {
        "full": full,
        "over": sum(1 for n in counts.values() if n > rate),
        "histogram": dict(sorted(collections.Counter(counts.values()).items())),
        "highest": max(counts.values()),
    }


@dataclass
class Waited:
    complete: bool
    seconds: float
    max_booked_ahead_s: float


async def wait_all_polled(
    conn: asyncpg.Connection,
    total: int,
    max_seconds: float,
    workers: list[asyncio.subprocess.Process],
) -> Waited:
    """Until every task has had a request, sampling how far ahead the budget is booked."""
    started = time.perf_counter()
    next_report = started + 10
    booked_max = 0.0
    while True:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM tasks WHERE polls >= 1) AS polled,
                   (SELECT count(*) FROM tasks WHERE upstream_status IS NOT NULL) AS answered,
                   (SELECT extract(epoch FROM next_slot_at - clock_timestamp())
                    FROM provider_state WHERE name = 'minimax') AS booked
            """
        )
        polled = int(row["polled"])
        booked = float(row["booked"] or 0.0)
        booked_max = max(booked_max, booked)
        now = time.perf_counter()
        if polled >= total:
            return Waited(True, now - started, booked_max)
        if now - started > max_seconds:
            return Waited(False, now - started, booked_max)
        if any(w.returncode is not None for w in workers):
            print("  a worker exited early")
            return Waited(False, now - started, booked_max)
        if now >= next_report:
            print(
                f"    {now - started:5.0f} s: {polled}/{total} polled, "
                f"{row['answered']} answered, budget booked {booked:.1f} s ahead",
                flush=True,
            )
            next_report += 10
        await asyncio.sleep(CHECK_EVERY_S)


async def one_run(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    workdir: Path,
    options: Options,
    replicas: int,
) -> RunResult:
    await sandbox.reset()
    await load_due_tasks(conn, await sandbox.create_processing_tasks(options.tasks))
    max_seconds = options.max_seconds or options.tasks / options.rate * 1.5 + 60
    print(
        f"  {replicas} worker(s): {options.tasks} tasks at {options.rate:g}/s "
        f"(~{options.tasks / options.rate:.0f} s; cut off after {max_seconds:.0f} s) ...",
        flush=True,
    )
    log_paths = [workdir / f"worker-{replicas}x-{i + 1}.log" for i in range(replicas)]
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(path.open("w")) for path in log_paths]
        env = pollhook_env(
            server,
            sandbox=sandbox,
            providers={
                "minimax": {
                    "rate_limit_per_s": options.rate,
                    "min_poll_interval_s": POLL_INTERVAL_S,
                    "max_poll_interval_s": POLL_INTERVAL_S,
                    "first_poll_delay_s": 0,
                }
            },
        )
        metrics_ports = [free_port() for _ in range(replicas)]
        workers = await start_workers(env, logs, metrics_ports)
        try:
            cpu = CpuProbe(
                server.server.get_pid(),
                {
                    **{f"worker {i + 1}": w.pid for i, w in enumerate(workers)},
                    "sandbox": sandbox.process.pid,
                },
            )
            cpu_before = cpu.sample()
            waited = await wait_all_polled(conn, options.tasks, max_seconds, workers)
            end_of_run = await conn.fetchval("SELECT clock_timestamp()")
            cpu_s = CpuProbe.delta(cpu_before, cpu.sample())
            delays: collections.Counter[str] = collections.Counter()
            for port in metrics_ports:
                delays.update(await poll_metrics(port))
        finally:
            codes = await stop_workers(workers)
    stats = await sandbox.key_stats()
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE polls >= 1) AS polled,
               count(*) FILTER (WHERE upstream_status IS NOT NULL) AS answered,
               coalesce(sum(polls), 0) AS sum_polls,
               coalesce(sum(fencing_token), 0) AS claims,
               coalesce(max(fencing_token), 0) AS max_claims,
               min(last_polled_at) AS first_answer,
               max(last_polled_at) AS last_answer
        FROM tasks
        """
    )
    seconds_info = analyse_seconds(stats["per_second"], options.rate)
    full: list[int] = seconds_info["full"]
    steady = sum(full) / len(full) if full else 0.0
    requests = int(stats["requests"])
    seconds_seen = [int(second) for second in stats["per_second"]]
    first_answer = row["first_answer"]
    end = row["last_answer"] if waited.complete else end_of_run
    span = (end - first_answer).total_seconds() if first_answer is not None else 0.0
    return RunResult(
        replicas=replicas,
        tasks=options.tasks,
        polled=int(row["polled"]),
        answered=int(row["answered"]),
        seconds=waited.seconds,
        requests=requests,
        rejected_1002=int(stats["rejected_rate_limited"]),
        max_in_any_1s_window=int(stats["max_in_any_1s_window"]),
        shortest_span_over_limit_s=stats.get("shortest_span_over_limit_s"),
        seconds_over_limit=int(seconds_info["over"]),
        full_seconds=len(full),
        steady_rate=steady,
        steady_share=steady / options.rate,
        lowest_full_second=min(full) if full else 0,
        highest_second=int(seconds_info.get("highest", 0)),
        overall_rate=(
            requests / (max(seconds_seen) - min(seconds_seen) + 1) if seconds_seen else 0.0
        ),
        goodput=(int(row["answered"]) - 1) / span if span > 0 else 0.0,
        wasted_requests=requests - int(row["sum_polls"]),
        max_booked_ahead_s=waited.max_booked_ahead_s,
        max_claims_per_task=int(row["max_claims"]),
        claims=int(row["claims"]),
        worker_exit_codes=codes,
        worker_warnings=count_warnings(log_paths),
        per_second_histogram=seconds_info.get("histogram", {}),
        complete=waited.complete,
        cpu_s=cpu_s,
        send_delay=send_delay_summary(dict(delays)),
    )


def print_results(results: list[RunResult], rate: float) -> None:
    header = (
        f"{'replicas':>8} {'requests':>8} {'1002s':>5} {'max/1s':>6} {'sec>lim':>7} "
        f"{'steady/s':>8} {'of limit':>8} {'overall/s':>9} {'low sec':>7} {'answered':>8} "
        f"{'goodput/s':>9} {'wasted':>6} {'claims':>6} {'booked s':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.replicas:>8} {r.requests:>8} {r.rejected_1002:>5} {r.max_in_any_1s_window:>6} "
            f"{r.seconds_over_limit:>7} {r.steady_rate:>8.2f} {r.steady_share:>8.1%} "
            f"{r.overall_rate:>9.2f} {r.lowest_full_second:>7} {r.answered:>8} "
            f"{r.goodput:>9.2f} {r.wasted_requests:>6} {r.claims:>6} {r.max_booked_ahead_s:>8.1f}"
        )
    print(
        "steady/s: requests per whole second between the first and the last request; "
        "goodput/s: tasks answered per second;\nwasted: requests whose answer was never "
        "applied (the claim was lost first); booked s: the furthest the shared budget "
        "was booked ahead of now."
    )
    print()
    for r in results:
        histogram = ", ".join(f"{n} req: {s} s" for n, s in r.per_second_histogram.items())
        print(f"{r.replicas} replica(s), requests per calendar second -> seconds: {histogram}")
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_s.items())
        print(f"  CPU seconds over the run: {cpu}")
        span = r.shortest_span_over_limit_s
        print(
            f"  shortest time {int(rate) + 1} requests arrived in: "
            + ("-" if span is None else f"{span * 1000:.1f} ms")
        )
        d = r.send_delay
        if d.get("requests"):
            print(
                f"  send check to headers written ({d['requests']:.0f} requests): p50 <= "
                f"{d['p50_le_s'] * 1000:g} ms, p99 <= {d['p99_le_s'] * 1000:g} ms, max <= "
                f"{d['max_le_s'] * 1000:g} ms"
            )
        if r.worker_warnings:
            print(f"  worker warnings: {r.worker_warnings}")
        print(f"  worker exit codes: {r.worker_exit_codes}")
    print()
    for r in results:
        useful = r.goodput / rate
        share_ok = r.steady_share >= TARGET_SHARE and useful >= TARGET_SHARE
        clean = r.rejected_1002 == 0 and r.max_in_any_1s_window <= rate
        print(
            f"{r.replicas} replica(s): requests at {r.steady_share:.1%} of {rate:g}/s, useful "
            f"answers at {useful:.1%} ({'meets' if share_ok else 'MISSES'} the "
            f"{TARGET_SHARE:.0%} target); {'no violations' if clean else 'VIOLATIONS'} "
            f"(max {r.max_in_any_1s_window} in a 1 s window, {r.rejected_1002} x 1002)"
            + ("" if r.complete else " - DID NOT FINISH")
        )


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(
        server,
        tasks=options.tasks,
        rate=options.rate,
        replicas=options.replicas,
        cpu_hog=options.cpu_hog,
        sandbox_nice=options.sandbox_nice,
        sandbox_fifo=options.sandbox_fifo,
    )
    print(
        f"{options.tasks} due tasks per run, limit {options.rate:g}/s shared by "
        f"{' then '.join(str(r) for r in options.replicas)} `pollhook worker` process(es)"
        + (f", {options.cpu_hog} CPU hog process(es) beside them" if options.cpu_hog else "")
        + ".\n"
    )
    results: list[RunResult] = []
    with (workdir / "sandbox.log").open("w") as log, cpu_hog(options.cpu_hog):
        sandbox = await Sandbox.start(minimax_rate=options.rate, log=log)
        try:
            # Refused without root: the sandbox is stopped all the same.
            os.setpriority(os.PRIO_PROCESS, sandbox.process.pid, options.sandbox_nice)
            if options.sandbox_fifo:
                run_first(sandbox.process.pid)
            conn = await connect(server)
            try:
                for replicas in options.replicas:
                    results.append(await one_run(server, sandbox, conn, workdir, options, replicas))
            finally:
                await conn.close()
        finally:
            await sandbox.stop()
    print_results(results, options.rate)
    ok = bool(results) and all(
        r.complete and all(code == 0 for code in r.worker_exit_codes) for r in results
    )
    return {"meta": meta, "results": [asdict(r) for r in results], "ok": ok}


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.budget_accuracy",
        description="Achieved request rate and rate-limit violations of pollhook's shared "
        "budget against the sandbox, with 1 and 3 worker replicas.",
    )
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per run (one poll each)")
    parser.add_argument("--rate", type=float, default=10.0, help="the limit, requests/s")
    parser.add_argument(
        "--replicas", type=int_list, default=[1, 3], help="worker counts, one run each"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="cut-off per run (default: 1.5 x tasks/rate + 60 s)",
    )
    parser.add_argument(
        "--cpu-hog",
        type=int,
        default=0,
        metavar="N",
        help="run N processes that only burn CPU beside the benchmark (default 0)",
    )
    parser.add_argument(
        "--sandbox-nice",
        type=int,
        default=0,
        metavar="N",
        help="the sandbox's nice value (default 0, starved with the rest); -10 gives the "
        "stand-in upstream CPU of its own on a starved machine (negative needs root)",
    )
    parser.add_argument(
        "--sandbox-fifo",
        action="store_true",
        help="run the sandbox on the real-time SCHED_FIFO policy (needs root): an upstream "
        "with CPUs of its own, whose arrival stamps carry no scheduling delay",
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 10 or args.rate <= 0:
        parser.error("--tasks must be at least 10 and --rate positive")
    if not args.replicas or max(args.replicas) > 8:
        parser.error("--replicas: worker counts between 1 and 8")
    return Options(
        tasks=args.tasks,
        rate=args.rate,
        replicas=args.replicas,
        max_seconds=args.max_seconds,
        json_path=args.json,
        cpu_hog=args.cpu_hog,
        sandbox_nice=args.sandbox_nice,
        sandbox_fifo=args.sandbox_fifo,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-budget-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
    )


if __name__ == "__main__":
    sys.exit(main())
