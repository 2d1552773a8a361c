"""Provider callbacks as hints (issue 16): how soon pollhook knows a task ended once its
provider called back, and how many polls a task costs with callbacks on against polling
alone, at the same budget, on the sandbox's Replicate.

Run from the repository root:

    python -m bench.callbacks [--tasks 300] [--inflight 40] [--budget 10] [--json PATH]

Setup: a throwaway embedded Postgres, `pollhook sandbox` (its Replicate allows `--budget`
requests per second per key, answering 429 past it), and per variant a fresh `pollhook api`
and `pollhook worker` with one Replicate instance at that budget (`rate_limit_per_s`) and
Replicate's own defaults otherwise (`KIND_DEFAULTS`: first poll 1 s, intervals 1 to 15 s,
the adaptive schedule):

* `polling`: no callbacks, the instance as configured;
* `callbacks`: the instance's `callback_secret` is the sandbox's signing secret (its
  Standard Webhooks callbacks verify), and each task is scripted with `callback_url` =
  the API's `POST /v1/inbound/replicate`: when the task ends, the sandbox posts the
  prediction there, signed. Polling stays on, `callback_poll_stretch` (10) times wider.

Workload: `--tasks` tasks arriving Poisson at `--inflight` / mean duration, durations
lognormal (median `--median` s, sigma 0.6), one in ten failing; each is scripted at the
sandbox, then registered through `POST /v1/tasks`. The same seeded workload for both.

Measured per variant:

* detection delay from the callback: pollhook's `completed_at` (database clock) minus when
  the sandbox posted the callback (its wall clock; one machine); p50 / p90 / p99;
* detection delay from the upstream's end (`ready_at`), for both variants;
* polls per task (`tasks.polls`: status queries that reached the sandbox);
* 429 answers (budget violations of the sandbox's window) and the callbacks' own results
  (`pollhook_inbound_callbacks_total` on the API's /metrics).

Targets (the issue's): with callbacks, detection p50 <= 0.5 s from the callback, and polls
per task <= 0.5x polling alone. A benchmark, not a test: it prints the table and exits
non-zero only when a run broke (a task never detected, a process failing, a 429).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.config import KIND_DEFAULTS, ProviderKind
from bench._support import (
    SANDBOX_KEY,
    TENANT,
    Sandbox,
    begin,
    connect,
    free_port,
    percentile,
    poll_metrics,
    pollhook_env,
    run_benchmark,
    start_api,
    start_worker,
    stop_process,
)
from bench.adaptive_schedule import empty_database

INSTANCE = "replicate"
DRAIN_S = 120.0
CHECK_EVERY_S = 0.2


@dataclass(frozen=True)
class Options:
    tasks: int
    inflight: int
    median_s: float
    budget: float
    seed: int
    json: Path | None


@dataclass(frozen=True)
class Arrival:
    at_s: float
    duration_s: float
    fails: bool


def workload(options: Options) -> list[Arrival]:
    rng = random.Random(options.seed)
    sigma = 0.6
    mean = options.median_s * math.exp(sigma**2 / 2)
    rate = options.inflight / mean
    at, arrivals = 0.0, []
    for _ in range(options.tasks):
        at += rng.expovariate(rate)
        duration = options.median_s * math.exp(rng.gauss(0, sigma))
        arrivals.append(Arrival(at, duration, rng.random() < 0.1))
    return arrivals


@dataclass
class RunResult:
    variant: str
    tasks: int = 0
    detected: int = 0
    from_callback_s: list[float] = field(default_factory=list)
    from_end_s: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    rate_limited: int = 0
    inbound: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], p: float) -> float | None:
            return round(percentile(sorted(values), p), 3) if values else None

        return {
            "variant": self.variant,
            "tasks": self.tasks,
            "detected": self.detected,
            "from_callback_p50_s": pct(self.from_callback_s, 50),
            "from_callback_p90_s": pct(self.from_callback_s, 90),
            "from_callback_p99_s": pct(self.from_callback_s, 99),
            "from_end_p50_s": pct(self.from_end_s, 50),
            "from_end_p90_s": pct(self.from_end_s, 90),
            "polls_per_task": round(sum(self.polls) / len(self.polls), 3) if self.polls else None,
            "rate_limited": self.rate_limited,
            "inbound": self.inbound,
        }


async def one_run(
    variant: str,
    server: Any,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    workdir: Path,
    options: Options,
    arrivals: list[Arrival],
) -> RunResult:
    await empty_database(conn)
    await sandbox.reset()
    config = (await sandbox.http.get("/_sandbox/config")).json()
    port = free_port()
    api_key = secrets.token_hex(16)
    instance: dict[str, object] = {
        **KIND_DEFAULTS[ProviderKind.REPLICATE],
        "base_url": sandbox.base_url,
        "api_key": SANDBOX_KEY,
        "rate_limit_per_s": options.budget,
    }
    if variant == "callbacks":
        instance["callback_secret"] = config["callback_secret"]
    env = pollhook_env(
        server,
        sandbox=sandbox,
        providers={INSTANCE: instance},
        api_keys=f"{TENANT}:{api_key}",
        api_rate_limit_per_s=0,
        public_url=f"http://127.0.0.1:{port}",
        engine__model_refresh_s=1.0,
    )
    inbound = f"http://127.0.0.1:{port}/v1/inbound/{INSTANCE}"
    result = RunResult(variant, tasks=len(arrivals))
    with (
        (workdir / f"{variant}-api.log").open("w") as api_log,
        (workdir / f"{variant}-worker.log").open("w") as worker_log,
    ):
        api = await start_api(env, port, api_log)
        worker = await start_worker(conn, env, worker_log)
        try:
            ids = await arrive(
                sandbox, port, api_key, arrivals, inbound if variant == "callbacks" else None
            )
            deadline = time.monotonic() + DRAIN_S + max(a.duration_s for a in arrivals)
            while time.monotonic() < deadline and worker.returncode is None:
                done = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE completed_at IS NOT NULL"
                )
                if done >= len(ids):
                    break
                await asyncio.sleep(CHECK_EVERY_S)
            metrics = await poll_metrics(port)
            prefix = f"inbound {INSTANCE} "
            result.inbound = {
                key.removeprefix(prefix): value
                for key, value in metrics.items()
                if key.startswith(prefix)
            }
        finally:
            await stop_process(worker, "the worker")
            await stop_process(api, "the API")
    rows = await conn.fetch(
        "SELECT external_id, polls, extract(epoch FROM completed_at) AS done "
        "FROM tasks WHERE external_id = ANY($1::text[])",
        ids,
    )
    seen = await sandbox.tasks(ids, provider=INSTANCE)
    for row in rows:
        if row["done"] is None:
            continue
        result.detected += 1
        result.polls.append(row["polls"])
        upstream = seen[row["external_id"]]
        result.from_end_s.append(float(row["done"]) - upstream["ready_at"])
        if upstream.get("callback_sent_at") is not None:
            result.from_callback_s.append(float(row["done"]) - upstream["callback_sent_at"])
    stats = (await sandbox.http.get("/_sandbox/stats")).json()["providers"][INSTANCE]
    result.rate_limited = sum(s["rejected_rate_limited"] for s in stats.values())
    return result


async def arrive(
    sandbox: Sandbox, port: int, api_key: str, arrivals: list[Arrival], callback_url: str | None
) -> list[str]:
    """Each arrival at its time: the sandbox task, then its registration with pollhook."""
    ids: list[str] = []
    start = time.monotonic()
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    ) as api:

        async def one(arrival: Arrival) -> None:
            await asyncio.sleep(max(0.0, start + arrival.at_s - time.monotonic()))
            script: dict[str, Any] = {"provider": INSTANCE, "duration_s": arrival.duration_s}
            if arrival.fails:
                script["outcome"] = "failed"
            if callback_url is not None:
                script["callback_url"] = callback_url
            created = await sandbox.http.post("/_sandbox/tasks", json=script)
            created.raise_for_status()
            external_id = str(created.json()["id"])
            registered = await api.post(
                "/v1/tasks", json={"provider": INSTANCE, "external_id": external_id}
            )
            registered.raise_for_status()
            ids.append(external_id)

        await asyncio.gather(*(one(a) for a in arrivals))
    return ids


def print_results(results: list[RunResult]) -> dict[str, Any]:
    by = {r.variant: r.summary() for r in results}
    print()
    print(
        f"{'variant':<10} {'tasks':>6} {'detected':>9} {'cb p50':>7} {'cb p90':>7} "
        f"{'cb p99':>7} {'end p50':>8} {'end p90':>8} {'polls/task':>10} {'429':>5}"
    )
    for s in by.values():

        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.2f}"

        print(
            f"{s['variant']:<10} {s['tasks']:>6} {s['detected']:>9} "
            f"{f(s['from_callback_p50_s']):>7} "
            f"{f(s['from_callback_p90_s']):>7} {f(s['from_callback_p99_s']):>7} "
            f"{f(s['from_end_p50_s']):>8} {f(s['from_end_p90_s']):>8} "
            f"{f(s['polls_per_task']):>10} {s['rate_limited']:>5}"
        )
    alone, hinted = by["polling"], by["callbacks"]
    ratio = (
        hinted["polls_per_task"] / alone["polls_per_task"]
        if alone["polls_per_task"] and hinted["polls_per_task"] is not None
        else None
    )
    print(f"\ncallbacks' results at the API: {hinted['inbound']}")
    p50 = hinted["from_callback_p50_s"]
    print(
        f"detection p50 from the callback: {p50} s (target <= 0.5 s: "
        f"{'met' if p50 is not None and p50 <= 0.5 else 'NOT met'})"
    )
    print(
        f"polls per task, callbacks / polling alone: {ratio:.3f}x (target <= 0.5x: "
        f"{'met' if ratio is not None and ratio <= 0.5 else 'NOT met'})"
        if ratio is not None
        else "polls per task: no ratio (a run detected nothing)"
    )
    return {"variants": by, "polls_ratio": ratio}


async def run(server: Any, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(server, benchmark="callbacks", options=options.__dict__ | {"json": None})
    arrivals = workload(options)
    conn = await connect(server)
    with (workdir / "sandbox.log").open("w") as sandbox_log:
        sandbox = await Sandbox.start(minimax_rate=0, log=sandbox_log)
        try:
            rates = {INSTANCE: options.budget}
            (await sandbox.http.patch("/_sandbox/config", json={"rates": rates})).raise_for_status()
            results = []
            for variant in ("polling", "callbacks"):
                print(f"running {variant} ...", flush=True)
                results.append(
                    await one_run(variant, server, sandbox, conn, workdir, options, arrivals)
                )
        finally:
            await sandbox.stop()
            await conn.close()
    report = print_results(results)
    ok = all(r.detected == r.tasks and r.rate_limited == 0 for r in results)
    return {"ok": ok, "meta": meta, **report}


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.callbacks", description=__doc__)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--inflight", type=int, default=40)
    parser.add_argument("--median", type=float, default=20.0, help="median task duration, s")
    parser.add_argument("--budget", type=float, default=10.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return Options(args.tasks, args.inflight, args.median, args.budget, args.seed, args.json)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark("pollhook-callbacks-", lambda s, w: run(s, w, options), options.json)


if __name__ == "__main__":
    raise SystemExit(main())
