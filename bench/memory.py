"""Memory against the number of tracked tasks: the resident memory (RSS) of the API and of
the worker with 10,000 tracked tasks, then with 1,000,000, the same processes in one run.

Run from the repository root:

    python -m bench.memory [--tracked 10000,1000000] [--due 2000] [--seconds 30] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, temporary directory under /tmp),
migrated; the sandbox with no rate limit, holding `--due` MiniMax tasks that report
Processing for 30 days; `pollhook api` and `pollhook worker` as subprocesses, the minimax
instance pointed at the sandbox with no rate limit and polls 1-2 s apart.

The tasks table holds `--due` tasks the worker polls all the time (one per sandbox task,
tenant `bench`) and, to make up each `--tracked` figure, active tasks of 100 other tenants
that fall due in a day (inserted with one INSERT ... SELECT generate_series: how rows are
registered is `bench.register`'s subject; here only their number matters). At each step the
table is topped up while both processes run, then for `--seconds` a client keeps the API
busy the way users do (registrations, GET of a task, the first and a later page of a
tenant's list, GET /v1/providers, /metrics) and the worker polls; the RSS of each process
is sampled every 0.5 s and the step reports the largest sample of its last half.

The target (issue 13): RSS after 1M tracked tasks within 10 % of RSS after 10k, for both
processes. Exit status 0 when every step ran, whatever the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench._support import (
    SANDBOX_KEY,
    TENANT,
    Sandbox,
    begin,
    connect,
    free_port,
    int_list,
    pollhook_env,
    run_benchmark,
    start_api,
    start_worker,
    stop_process,
)

API_KEY = "bench-memory-key-0123456789abcdef"
OTHER_TENANTS = 100


@dataclass(frozen=True)
class Options:
    tracked: list[int]
    due: int
    seconds: float


@dataclass(frozen=True)
class Step:
    tracked: int
    api_rss_mb: float
    worker_rss_mb: float
    api_requests: int
    polls: int


async def top_up(conn: asyncpg.Connection, tracked: int) -> None:
    """Active tasks of other tenants, due in a day, until the table holds `tracked`."""
    have = int(await conn.fetchval("SELECT count(*) FROM tasks"))
    if tracked > have:
        await conn.execute(
            """
            INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at,
                               next_poll_at, metadata)
            SELECT gen_random_uuid(), 'tenant-' || (n % $2), 'minimax', 'filler-' || n,
                   'processing', now() + interval '2 days', now() + interval '1 day',
                   jsonb_build_object('order', n)
            FROM generate_series($1::bigint, $1::bigint + $3::bigint - 1) AS n
            """,
            have,
            OTHER_TENANTS,
            tracked - have,
        )
        await conn.execute("VACUUM ANALYZE tasks")


async def load_api(port: int, stop: asyncio.Event, task_ids: list[str], first: int) -> int:
    """Requests of every kind a user makes, one after another, until `stop`; registrations
    are numbered from `first`."""
    done = 0
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30.0
    ) as http:
        n = first
        while not stop.is_set():
            n += 1
            created = await http.post(
                "/v1/tasks",
                json={"provider": "minimax", "external_id": 10**12 + n},
            )
            page = await http.get("/v1/tasks", params={"limit": 100})
            cursor = page.json().get("next_cursor")
            responses = [
                created,
                page,
                await http.get(f"/v1/tasks/{task_ids[n % len(task_ids)]}"),
                await http.get(
                    "/v1/tasks", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
                ),
                await http.get("/v1/providers"),
                await http.get("/metrics"),
            ]
            for response in responses:
                if response.status_code >= 400:
                    raise RuntimeError(f"{response.request.url}: {response.status_code}")
            done += len(responses)
    return done


async def sample_rss(
    processes: dict[str, psutil.Process], seconds: float
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in processes}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in processes.items():
            samples[name].append(process.memory_info().rss / 2**20)
        await asyncio.sleep(0.5)
    return samples


async def run(server: Any, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(server, tracked=options.tracked, due=options.due)
    conn = await connect(server)
    steps: list[Step] = []
    try:
        with (
            (workdir / "sandbox.log").open("w") as sandbox_log,
            (workdir / "api.log").open("w") as api_log,
            (workdir / "worker.log").open("w") as worker_log,
        ):
            sandbox = await Sandbox.start(minimax_rate=0, log=sandbox_log)
            try:
                ids = await sandbox.create_processing_tasks(options.due)
                await conn.execute(
                    """
                    INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at,
                                       next_poll_at)
                    SELECT gen_random_uuid(), $1, 'minimax', x, 'processing',
                           now() + interval '2 days', now()
                    FROM unnest($2::text[]) AS x
                    """,
                    TENANT,
                    ids,
                )
                task_ids = [str(r[0]) for r in await conn.fetch("SELECT id FROM tasks")]
                env = pollhook_env(
                    server,
                    sandbox=sandbox,
                    providers={
                        "minimax": {
                            "rate_limit_per_s": 0,
                            "min_poll_interval_s": 1,
                            "max_poll_interval_s": 2,
                        }
                    },
                    api_keys=f"{TENANT}:{API_KEY}",
                    api_rate_limit_per_s=0,
                )
                port = free_port()
                api = await start_api(env, port, api_log)
                worker = await start_worker(conn, env, worker_log)
                processes = {
                    "api": psutil.Process(api.pid),
                    "worker": psutil.Process(worker.pid),
                }
                try:
                    for tracked in options.tracked:
                        await top_up(conn, tracked)
                        polls_before = await conn.fetchval("SELECT sum(polls) FROM tasks")
                        stop = asyncio.Event()
                        load = asyncio.create_task(
                            load_api(port, stop, task_ids, first=len(steps) * 10**9)
                        )
                        samples = await sample_rss(processes, options.seconds)
                        stop.set()
                        requests = await load
                        polls = await conn.fetchval("SELECT sum(polls) FROM tasks")
                        half = {name: s[len(s) // 2 :] for name, s in samples.items()}
                        step = Step(
                            tracked=int(await conn.fetchval("SELECT count(*) FROM tasks")),
                            api_rss_mb=max(half["api"]),
                            worker_rss_mb=max(half["worker"]),
                            api_requests=requests,
                            polls=int(polls - polls_before),
                        )
                        steps.append(step)
                        print(
                            f"  {step.tracked:>9,} tracked: API {step.api_rss_mb:6.1f} MB "
                            f"({requests} requests), worker {step.worker_rss_mb:6.1f} MB "
                            f"({step.polls} polls)"
                        )
                finally:
                    await stop_process(worker, "the worker")
                    await stop_process(api, "the API")
            finally:
                await sandbox.stop()
    finally:
        await conn.close()
    first, last = steps[0], steps[-1]
    ratios = {
        "api": last.api_rss_mb / first.api_rss_mb,
        "worker": last.worker_rss_mb / first.worker_rss_mb,
    }
    print(
        f"\nRSS at {last.tracked:,} over RSS at {first.tracked:,} tracked tasks: "
        f"API {ratios['api']:.3f}x, worker {ratios['worker']:.3f}x (target <= 1.10x)"
    )
    return {
        "ok": True,
        "meta": meta,
        "sandbox_key": SANDBOX_KEY,
        "steps": [step.__dict__ for step in steps],
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracked", type=int_list, default=[10_000, 1_000_000])
    parser.add_argument("--due", type=int, default=2_000, help="tasks the worker keeps polling")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per step")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    options = Options(tracked=args.tracked, due=args.due, seconds=args.seconds)
    with contextlib.suppress(KeyboardInterrupt):
        return run_benchmark("pollhook-bench-memory-", lambda s, w: run(s, w, options), args.json)
    return 130


if __name__ == "__main__":
    sys.exit(main())
