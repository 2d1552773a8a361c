"""Fairness between tenants: how much one tenant's flood slows the detection of another
tenant's tasks when the flood saturates the provider instance's budget.

Run from the repository root:

    python -m bench.fairness [--rate 20] [--first-poll 5] [--interval 30] [--seconds 60]
        [--saturation 2] [--flood-factor 100] [--json PATH]

Setup: a throwaway embedded Postgres, the sandbox (`pollhook sandbox --jimmy-rate RATE`,
which answers a rate limit past RATE requests in any sliding 1-second window), one `pollhook
api` and one `pollhook worker` with two tenants' keys. The Jimmy instance (one request per
poll, so every poll costs exactly one slot) has the budget `--rate` and the `fixed` schedule:
the first poll `--first-poll` s after registration, then every `--interval` s (±10 %
jitter).

Workload, in one run:

* tenant B, throughout: a steady stream of short tasks (a new one every 1 / B_RATE s), each
  done upstream after 0.2-0.8 of the first-poll delay (stratified, the same sequence in
  both phases), so that its first poll finds it done: its detection delay is the time to
  that poll, which is what another tenant's backlog can stretch, without the noise of
  where a done time falls between two polls;
* phase "alone": B's stream only, for `--seconds`; then until B's tasks are all detected;
* phase "flood": tenant A registers `--flood-factor` x B's in-flight count of tasks that
  never finish; B_RATE is sized so that both tenants' poll demand is then `--saturation` x
  what the budget carries (1 / 1.05 of the rate). After one interval (A's tasks have been
  polled once and are falling due again), B's stream runs again for `--seconds`, then until
  B's tasks of the phase are all detected.

Measured, per phase, over B's tasks registered in it: the detection delay, pollhook's
`completed_at` (database clock) minus the upstream's done time (sandbox clock, same
machine): p50 / p90; B's first-poll lateness, the mean time from registration to the first
query beyond the first-poll delay; requests per second at the sandbox
and rate-limit answers. The figure: B's p50 with A flooding / B's p50 alone (target <= 1.2).

With longest-overdue-first claims, B's tasks queue behind A's whole overdue backlog; with
the fair claim (app/core/repository.py) B's due tasks are in the next batch, and what is
left is the wait for the next claim and behind the slots already booked for the batches
before it, which the poll loop keeps to a lead and a batch while the budget binds
(app/polling/claiming.py).

This is a benchmark, not a test: it prints the figures and exits non-zero only when a run
broke (a process failed, a registration failed, a B task was never detected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.budget.capacity import SPACING_FACTOR
from app.core.embedded import EmbeddedPostgres
from bench._support import (
    SANDBOX_KEY,
    Sandbox,
    begin,
    connect,
    count_warnings,
    free_port,
    percentile,
    pollhook_env,
    run_benchmark,
    start_api,
    start_worker,
    stop_process,
)

TENANT_A = "flood"
TENANT_B = "steady"
TARGET_RATIO = 1.2
# B's tasks are done upstream after this share of the first-poll delay (not jittered).
B_DURATION = (0.2, 0.8)
GOLDEN = 0.6180339887498949  # stratifies B's durations over that range
# A's tasks outlive any run.
A_DURATION_S = 24 * 3600.0
CHECK_EVERY_S = 0.5
REGISTER_CONCURRENCY = 16


@dataclass
class Options:
    rate: float
    first_poll_s: float
    interval_s: float
    seconds: float
    saturation: float
    flood_factor: int
    json_path: Path | None

    @property
    def carried_per_s(self) -> float:
        """Polls per second the budget carries (slots are SPACING_FACTOR / rate apart)."""
        return self.rate / SPACING_FACTOR

    @property
    def b_rate(self) -> float:
        """B's tasks per second: each costs one poll and is tracked for about the first-poll
        delay, A's flood_factor x as many tasks are polled every interval, and together
        they ask `saturation` x what the budget carries."""
        a_polls_per_b_task = self.flood_factor * self.first_poll_s / self.interval_s
        return self.saturation * self.carried_per_s / (1 + a_polls_per_b_task)

    @property
    def b_inflight(self) -> float:
        return self.b_rate * self.first_poll_s

    @property
    def flood_tasks(self) -> int:
        return round(self.flood_factor * self.b_inflight)


@dataclass
class Phase:
    name: str
    b_tasks: int
    detected: int
    delay_p50_s: float
    delay_p90_s: float
    first_poll_lateness_s: float  # mean, registration to the first query, beyond the delay
    b_polls: int
    requests_per_s: float  # at the sandbox, every tenant, over the phase's B window
    seconds: float
    delays_s: list[float] = field(default_factory=list)


@dataclass
class Stream:
    """B's tasks: created at the sandbox, then registered with pollhook."""

    sandbox: Sandbox
    api: httpx.AsyncClient
    first_poll_s: float
    registered: dict[str, float] = field(default_factory=dict)  # external id -> done at
    errors: list[str] = field(default_factory=list)
    index: int = 0

    async def run(self, seconds: float, gap_s: float) -> list[str]:
        ids: list[str] = []
        started = time.monotonic()
        pending: set[asyncio.Task[str | None]] = set()
        while time.monotonic() - started < seconds:
            low, high = B_DURATION
            share = (self.index * GOLDEN) % 1.0
            self.index += 1
            duration = self.first_poll_s * (low + (high - low) * share)
            pending.add(asyncio.create_task(self._one(duration)))
            await asyncio.sleep(gap_s)
        for external_id in await asyncio.gather(*pending):
            if external_id is not None:
                ids.append(external_id)
        return ids

    async def _one(self, duration_s: float) -> str | None:
        try:
            created = await self.sandbox.http.post(
                "/_sandbox/tasks", json={"provider": "jimmy", "duration_s": duration_s}
            )
            created.raise_for_status()
            body = created.json()
            external_id = str(body["id"])
            response = await self.api.post(
                "/v1/tasks", json={"provider": "jimmy", "external_id": external_id}
            )
        except httpx.HTTPError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        if response.status_code != 201:
            self.errors.append(f"HTTP {response.status_code} {response.text[:200]}")
            return None
        self.registered[external_id] = float(body["ready_at"])
        return external_id


async def register_flood(sandbox: Sandbox, api: httpx.AsyncClient, count: int) -> int:
    """A's tasks, running upstream for a day; returns how many registrations failed."""
    response = await sandbox.http.post(
        "/_sandbox/tasks/batch",
        json={"provider": "jimmy", "count": count, "duration_s": A_DURATION_S},
    )
    response.raise_for_status()
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def one(external_id: str) -> bool:
        async with gate:
            r = await api.post("/v1/tasks", json={"provider": "jimmy", "external_id": external_id})
            return r.status_code == 201

    results = await asyncio.gather(*(one(str(i)) for i in response.json()["ids"]))
    return results.count(False)


async def wait_detected(
    conn: asyncpg.Connection, ids: list[str], limit_s: float, worker: asyncio.subprocess.Process
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and worker.returncode is None:
        done = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE tenant = $1 AND external_id = ANY($2::text[]) "
            "AND completed_at IS NOT NULL",
            TENANT_B,
            ids,
        )
        if done >= len(ids):
            return
        await asyncio.sleep(CHECK_EVERY_S)


async def jimmy_requests(sandbox: Sandbox) -> tuple[int, int]:
    """Requests the sandbox saw for the benchmark's Jimmy key, and rate-limit answers."""
    response = await sandbox.http.get("/_sandbox/stats")
    response.raise_for_status()
    stats = response.json()["jimmy"].get(SANDBOX_KEY) or {}
    return int(stats.get("requests", 0)), int(stats.get("rejected_rate_limited", 0))


async def measure_phase(
    name: str,
    conn: asyncpg.Connection,
    stream: Stream,
    sandbox: Sandbox,
    worker: asyncio.subprocess.Process,
    options: Options,
) -> Phase:
    requests_before, _ = await jimmy_requests(sandbox)
    started = time.monotonic()
    ids = await stream.run(options.seconds, 1 / options.b_rate)
    window = time.monotonic() - started
    requests_after, _ = await jimmy_requests(sandbox)
    # B's tasks are found done by their first poll, or else by the next one: beyond that
    # (and the lateness) something is broken.
    await wait_detected(conn, ids, options.first_poll_s + options.interval_s * 2 + 60, worker)
    rows = {
        str(r["external_id"]): r["completed"]
        for r in await conn.fetch(
            "SELECT external_id, extract(epoch FROM completed_at) AS completed FROM tasks "
            "WHERE tenant = $1 AND external_id = ANY($2::text[])",
            TENANT_B,
            ids,
        )
    }
    delays = sorted(float(rows[i]) - stream.registered[i] for i in ids if rows.get(i) is not None)
    upstream = await sandbox.tasks(ids, provider="jimmy")
    lateness = [
        float(task["queries"][0]) - float(task["created_at"]) - options.first_poll_s
        for task in upstream.values()
        if task["queries"]
    ]
    return Phase(
        name=name,
        b_tasks=len(ids),
        detected=len(delays),
        delay_p50_s=percentile(delays, 50),
        delay_p90_s=percentile(delays, 90),
        first_poll_lateness_s=sum(lateness) / len(lateness) if lateness else 0.0,
        b_polls=sum(int(task["polls"]) for task in upstream.values()),
        requests_per_s=(requests_after - requests_before) / window,
        seconds=time.monotonic() - started,
        delays_s=[round(d, 3) for d in delays],
    )


def print_phases(phases: list[Phase], options: Options) -> float:
    header = (
        f"{'phase':<6} {'B tasks':>7} {'detected':>8} {'p50 s':>6} {'p90 s':>6} "
        f"{'lateness s':>10} {'B polls':>7} {'req/s':>6} {'seconds':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for p in phases:
        print(
            f"{p.name:<6} {p.b_tasks:>7} {p.detected:>8} {p.delay_p50_s:>6.2f} "
            f"{p.delay_p90_s:>6.2f} {p.first_poll_lateness_s:>10.2f} {p.b_polls:>7} "
            f"{p.requests_per_s:>6.2f} {p.seconds:>7.0f}"
        )
    alone, flood = phases
    ratio = flood.delay_p50_s / alone.delay_p50_s if alone.delay_p50_s > 0 else float("inf")
    print(
        "lateness: the mean time from a B task's registration to its first poll beyond the "
        "first-poll delay (the wait for a claim and a budget slot)."
    )
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"\nB's p50 detection delay with A flooding / alone: {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:g}x: {verdict})"
    )
    return ratio


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    flood_tasks = options.flood_tasks
    demand = flood_tasks / options.interval_s + options.b_rate
    meta = await begin(
        server,
        rate=options.rate,
        first_poll_s=options.first_poll_s,
        interval_s=options.interval_s,
        seconds=options.seconds,
        saturation=options.saturation,
        b_per_s=options.b_rate,
        flood_tasks=flood_tasks,
    )
    print(
        f"Jimmy instance at {options.rate:g}/s (carries {options.carried_per_s:.2f} polls/s), "
        f"first poll after {options.first_poll_s:g} s, then every {options.interval_s:g} s; "
        f"B {options.b_rate:.2f} tasks/s (~{options.b_inflight:.1f} in flight); A floods "
        f"{flood_tasks}: demand "
        f"{demand:.1f} polls/s = {demand / options.carried_per_s:.2f}x the budget.\n",
        flush=True,
    )
    keys = {TENANT_A: secrets.token_hex(16), TENANT_B: secrets.token_hex(16)}
    port = free_port()
    phases: list[Phase] = []
    failures: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        sandbox_log = stack.enter_context((workdir / "sandbox.log").open("w"))
        sandbox = await Sandbox.start(minimax_rate=0, jimmy_rate=options.rate, log=sandbox_log)
        stack.push_async_callback(sandbox.stop)
        conn = await connect(server)
        stack.push_async_callback(conn.close)
        env = pollhook_env(
            server,
            sandbox=sandbox,
            providers={
                "jimmy": {
                    "api_key": SANDBOX_KEY,
                    "rate_limit_per_s": options.rate,
                    "schedule": "fixed",
                    "first_poll_delay_s": options.first_poll_s,
                    "min_poll_interval_s": options.interval_s,
                    "max_poll_interval_s": options.interval_s,
                    "deadline_s": A_DURATION_S,
                }
            },
            api_keys=",".join(f"{tenant}:{key}" for tenant, key in keys.items()),
            api_rate_limit_per_s=0,
        )
        api_process = await start_api(
            env, port, stack.enter_context((workdir / "api.log").open("w"))
        )
        stack.push_async_callback(stop_process, api_process, "api")
        worker_log_path = workdir / "worker.log"
        worker = await start_worker(conn, env, stack.enter_context(worker_log_path.open("w")))
        stack.push_async_callback(stop_process, worker, "worker")
        clients = {
            tenant: await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30.0,
                )
            )
            for tenant, key in keys.items()
        }
        stream = Stream(sandbox, clients[TENANT_B], options.first_poll_s)

        print(f"  phase alone: B for {options.seconds:g} s ...", flush=True)
        phases.append(await measure_phase("alone", conn, stream, sandbox, worker, options))
        print(f"  phase flood: registering A's {flood_tasks} tasks ...", flush=True)
        failed = await register_flood(sandbox, clients[TENANT_A], flood_tasks)
        if failed:
            failures.append(f"{failed} of A's registrations failed")
        # A's first polls fall due after the first-poll delay and take longer than that to
        # drain; one interval on, the saturation is established.
        await asyncio.sleep(options.first_poll_s + options.interval_s)
        print(f"  phase flood: B for {options.seconds:g} s ...", flush=True)
        phases.append(await measure_phase("flood", conn, stream, sandbox, worker, options))
        _, rejected = await jimmy_requests(sandbox)
        a_polled = await conn.fetchval(
            "SELECT coalesce(sum(polls), 0) FROM tasks WHERE tenant = $1", TENANT_A
        )
    ratio = print_phases(phases, options)
    print(f"A's polls: {a_polled}; rate-limit answers at the sandbox: {rejected}")
    warnings = count_warnings([worker_log_path])
    if warnings:
        print(f"worker warnings: {warnings}")
    failures += stream.errors[:5]
    failures += [
        f"{p.name}: {p.b_tasks - p.detected} B tasks not detected"
        for p in phases
        if p.detected < p.b_tasks
    ]
    if worker.returncode not in (0, None):
        failures.append(f"worker exit code {worker.returncode}")
    for failure in failures:
        print(f"BROKEN: {failure}")
    return {
        "meta": meta,
        "phases": [asdict(p) for p in phases],
        "ratio_p50": ratio,
        "target_ratio": TARGET_RATIO,
        "demand_per_s": demand,
        "carried_per_s": options.carried_per_s,
        "a_polls": int(a_polled),
        "rate_limit_answers": rejected,
        "worker_warnings": warnings,
        "failures": failures,
        "ok": not failures,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fairness",
        description="B's detection delay with tenant A flooding a saturated budget, against B "
        "alone, in one run.",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="the budget, requests/s")
    parser.add_argument(
        "--first-poll", type=float, default=5.0, help="first poll after registration, s"
    )
    parser.add_argument("--interval", type=float, default=30.0, help="later polls, s")
    parser.add_argument("--seconds", type=float, default=60.0, help="B's stream per phase, s")
    parser.add_argument(
        "--saturation", type=float, default=2.0, help="both tenants' demand / the budget"
    )
    parser.add_argument(
        "--flood-factor", type=int, default=100, help="A's tasks / B's tasks in flight"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.first_poll < 1 or args.interval < 1 or args.seconds < 10:
        parser.error("--rate positive, --first-poll and --interval >= 1 s, --seconds >= 10")
    if args.saturation <= 0 or args.flood_factor < 1:
        parser.error("--saturation positive, --flood-factor at least 1")
    return Options(
        rate=args.rate,
        first_poll_s=args.first_poll,
        interval_s=args.interval,
        seconds=args.seconds,
        saturation=args.saturation,
        flood_factor=args.flood_factor,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-fairness-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
    )


if __name__ == "__main__":
    sys.exit(main())
