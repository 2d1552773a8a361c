"""Shared plumbing of the benchmarks and the soak.

A throwaway embedded Postgres, pollhook's processes and the sandbox as subprocesses (their
environment, start, readiness and stop), the task rows several benchmarks load, what
pollhook's processes report (warning log lines, /metrics), percentiles, CPU accounting per
process, a description of the machine and the JSON report. Nothing here measures; the
benchmark modules do.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TextIO

import asyncpg
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from app.core import migrate
from app.core.db import create_engine
from app.core.embedded import DATABASE_NAME, EmbeddedPostgres, start_embedded

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# The key every benchmark sends to the sandbox (any key not starting with "bad" is valid).
SANDBOX_KEY = "bench-key"
TENANT = "bench"

# --- the embedded database --------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_postgres(prefix: str) -> Iterator[tuple[EmbeddedPostgres, Path]]:
    """A fresh embedded Postgres in a temporary directory under /tmp, deleted afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        print(f"starting a throwaway embedded Postgres under {workdir} ...", flush=True)
        server = start_embedded(workdir, cleanup_mode="delete")
        try:
            yield server, workdir
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def begin(server: EmbeddedPostgres, **about: Any) -> dict[str, Any]:
    """Create and migrate pollhook's database, and print the header: the machine, the
    revision and Postgres, which the report keeps with `about` the run."""
    meta = describe_machine()
    meta["postgres"] = await prepare_database(server)
    meta.update(about)
    print_header(meta)
    return meta


async def prepare_database(server: EmbeddedPostgres) -> str:
    """Create and migrate pollhook's database; returns the server version."""
    await server.ensure_database()
    engine = create_engine(server.url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    conn = await connect(server)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def connect(server: EmbeddedPostgres) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=server.socket_dir, port=server.port, user="postgres", database=DATABASE_NAME
    )


async def create_pool(server: EmbeddedPostgres, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        host=server.socket_dir,
        port=server.port,
        user="postgres",
        database=DATABASE_NAME,
        min_size=size,
        max_size=size,
    )


async def load_due_tasks(
    conn: asyncpg.Connection, external_ids: list[str], *, status: str = "processing"
) -> None:
    """Replace every task row with one due MiniMax task per sandbox id (deadline a day off)."""
    await conn.execute("TRUNCATE tasks CASCADE")
    await conn.execute("DELETE FROM provider_state")
    await conn.execute(
        """
        INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, next_poll_at)
        SELECT gen_random_uuid(), $1, 'minimax', x, $2,
               now() + interval '1 day', now() - interval '1 second'
        FROM unnest($3::text[]) AS x
        """,
        TENANT,
        status,
        external_ids,
    )
    await conn.execute("ANALYZE tasks")


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def pollhook_env(
    server: EmbeddedPostgres,
    *,
    sandbox: Sandbox | None = None,
    providers: Mapping[str, Mapping[str, object]] | None = None,
    **settings: object,
) -> dict[str, str]:
    """The environment of a pollhook process: this one's without its POLLHOOK_ variables,
    then the throwaway database, JSON logs at WARNING, and `settings` by their name under
    POLLHOOK_ (`webhooks__max_in_flight=64` is POLLHOOK_WEBHOOKS__MAX_IN_FLIGHT). With
    `sandbox`, both built-in instances point at it (an instance without tasks still stays
    on loopback) and minimax uses SANDBOX_KEY; `providers` then sets each instance's own
    settings."""
    values: dict[str, object] = {
        "database_url": server.url,
        "log_format": "json",
        "log_level": "WARNING",
        **settings,
    }
    if sandbox is not None:
        values["providers__minimax__base_url"] = sandbox.base_url
        values["providers__minimax__api_key"] = SANDBOX_KEY
        values["providers__jimmy__base_url"] = sandbox.base_url
    for name, instance in (providers or {}).items():
        values.update({f"providers__{name}__{key}": value for key, value in instance.items()})
    env = without_pollhook_settings()
    env.update({f"POLLHOOK_{key.upper()}": _env_value(value) for key, value in values.items()})
    return env


def without_pollhook_settings() -> dict[str, str]:
    """This process's environment without its POLLHOOK_ variables, which would otherwise
    configure the processes a benchmark starts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("POLLHOOK_")}


async def spawn(
    module: str, *args: str, log: TextIO, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m module args...` with its output in `log`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


async def wait_ready(
    process: asyncio.subprocess.Process,
    name: str,
    ready: Callable[[], Awaitable[bool]],
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Until `ready()` says so (connection errors count as not yet); fails if the process
    exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        with contextlib.suppress(httpx.TransportError, OSError):
            if await ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} was not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def http_ok(http: httpx.AsyncClient, path: str) -> bool:
    return (await http.get(path, timeout=2.0)).status_code == 200


async def start_api(
    env: Mapping[str, str], port: int, log: TextIO, *, timeout_s: float = READY_TIMEOUT_S
) -> asyncio.subprocess.Process:
    """`pollhook api` on `port`, returned once /readyz answers 200."""
    process = await spawn("app.cli", "api", "--port", str(port), env=env, log=log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_ready(process, "the API", lambda: http_ok(http, "/readyz"), timeout_s)
    except BaseException:
        await stop_process(process, "the API")
        raise
    return process


async def start_worker(
    conn: asyncpg.Connection, env: Mapping[str, str], log: TextIO
) -> asyncio.subprocess.Process:
    """`pollhook worker`, returned once it listens for new tasks and due deliveries (so
    rows written from now on wake it)."""
    since = await conn.fetchval("SELECT clock_timestamp()")
    process = await spawn("app.cli", "worker", env=env, log=log)

    async def listening() -> bool:
        channels = await conn.fetchval(
            """
            SELECT count(DISTINCT query) FROM pg_stat_activity
            WHERE backend_start >= $1
              AND (query LIKE 'LISTEN %pollhook_deliveries%'
                   OR query LIKE 'LISTEN %pollhook_tasks%')
            """,
            since,
        )
        return bool(channels >= 2)

    try:
        await wait_ready(process, "the worker", listening)
    except BaseException:
        await stop_process(process, "the worker")
        raise
    return process


class ControlledServer:
    """A helper server run as a subprocess on a free loopback port, with an HTTP client for
    its control routes: started, waited for until `health_path` answers, stopped."""

    name = "server"
    health_path = "/"

    def __init__(self, port: int, process: asyncio.subprocess.Process) -> None:
        self.port = port
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=60.0)

    @classmethod
    async def launch(
        cls, port: int, *args: str, log: TextIO, env: dict[str, str] | None = None
    ) -> Self:
        server = cls(port, await spawn(*args, env=env, log=log))
        try:
            await wait_ready(
                server.process, f"the {cls.name}", lambda: http_ok(server.http, cls.health_path)
            )
        except BaseException:
            await server.stop()
            raise
        return server

    def url(self, path: str) -> str:
        return self.base_url + path

    async def stop(self) -> None:
        await self.http.aclose()
        await stop_process(self.process, self.name)


class Sandbox(ControlledServer):
    """`python -m app.cli sandbox`, and a client for its control API."""

    name = "sandbox"
    health_path = "/_sandbox/health"

    @classmethod
    async def start(
        cls, *, minimax_rate: float, log: TextIO, jimmy_rate: float = 0.0, seed: int = 1
    ) -> Sandbox:
        port = free_port()
        args = ["--port", str(port), "--minimax-rate", f"{minimax_rate:g}"]
        args += ["--jimmy-rate", f"{jimmy_rate:g}", "--seed", str(seed)]
        return await cls.launch(
            port, "app.cli", "sandbox", *args, env=without_pollhook_settings(), log=log
        )

    async def reset(self) -> None:
        (await self.http.post("/_sandbox/reset")).raise_for_status()

    async def create_processing_tasks(self, count: int) -> list[str]:
        """`count` MiniMax tasks that report Processing for 30 days."""
        ids: list[str] = []
        while len(ids) < count:
            batch = min(50_000, count - len(ids))
            response = await self.http.post(
                "/_sandbox/tasks/batch",
                json={
                    "provider": "minimax",
                    "count": batch,
                    "duration_s": 30 * 24 * 3600.0,
                    "status_case": "title",
                },
            )
            response.raise_for_status()
            ids.extend(str(i) for i in response.json()["ids"])
        return ids

    async def key_stats(self) -> dict[str, Any]:
        """The sandbox's MiniMax counters for the benchmark key (zeros if it saw none)."""
        response = await self.http.get("/_sandbox/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()["minimax"].get(SANDBOX_KEY) or {
            "requests": 0,
            "rejected_rate_limited": 0,
            "faults_injected": 0,
            "max_in_any_1s_window": 0,
            "timestamps_dropped": 0,
            "per_second": {},
        }
        others = {k: v["requests"] for k, v in response.json()["minimax"].items()}
        others.pop(SANDBOX_KEY, None)
        stats["other_keys"] = others
        return stats

    async def tasks(self, ids: Iterable[str], provider: str = "minimax") -> dict[str, Any]:
        """The sandbox's record of each task (its times, queries and gaps), by id."""
        gate = asyncio.Semaphore(16)

        async def one(task_id: str) -> tuple[str, Any]:
            async with gate:
                response = await self.http.get(f"/_sandbox/tasks/{provider}/{task_id}")
                response.raise_for_status()
                return task_id, response.json()

        return dict(await asyncio.gather(*(one(i) for i in ids)))


async def stop_process(
    process: asyncio.subprocess.Process, name: str, sig: int = signal.SIGTERM
) -> None:
    """Signal a child, wait for it (bounded), kill it if it will not go."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        print(f"  {name} (pid {process.pid}) did not stop within {STOP_TIMEOUT_S:.0f} s; killing")
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# --- measuring --------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Per second between the (seconds, done) samples nearest 10 % and 90 % of `total`."""
    low = next(((t, n) for t, n in samples if n >= total * 0.1), None)
    high = next(((t, n) for t, n in samples if n >= total * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return 0.0
    return (high[1] - low[1]) / (high[0] - low[0])


def count_warnings(paths: Iterable[Path]) -> dict[str, int]:
    """Warning and error events in pollhook's JSON log lines, most frequent first, as
    "level:event(error)" (the error's name where the line gives one); tracebacks and other
    lines that are not JSON counted apart."""
    found: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if line.startswith("Traceback"):
                    found["(traceback)"] += 1
                elif line.strip():
                    found["(non-JSON output)"] += 1
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error"):
                # APScheduler names the next run time in its messages: one event, not many.
                event = re.sub(r"next run at: [^)]*", "next run at: ...", str(record.get("event")))
                error = f"({record['error']})" if record.get("error") else ""
                found[f"{record['level']}:{event}{error}"] += 1
    return dict(found.most_common())


async def poll_metrics(port: int) -> dict[str, float]:
    """A worker's poll outcomes ("polls PROVIDER OUTCOME"), reserved budget slots ("slots
    PROVIDER"), the slots that went by unsent ("missed PROVIDER") and the send delay
    histogram's cumulative buckets ("send delay le BOUND", requests whose headers were
    written within BOUND seconds of their send check) and provider callbacks' results
    ("inbound PROVIDER RESULT") from its /metrics; empty when it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            response.raise_for_status()
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "pollhook_polls_total":
                found[f"polls {labels['provider']} {labels['outcome']}"] += sample.value
            elif sample.name == "pollhook_budget_slots_reserved_total":
                found[f"slots {labels['provider']}"] += sample.value
            elif sample.name == "pollhook_budget_slots_missed_total":
                found[f"missed {labels['provider']}"] += sample.value
            elif sample.name == "pollhook_inbound_callbacks_total":
                found[f"inbound {labels['provider']} {labels['result']}"] += sample.value
            elif sample.name == "pollhook_upstream_send_delay_seconds_bucket":
                found[f"send delay le {labels['le']}"] += sample.value
    return {k: found[k] for k in sorted(found)}


def send_delay_summary(metrics: dict[str, float]) -> dict[str, float]:
    """From `poll_metrics`' send delay buckets (summed over workers): how many requests, and
    the bucket bounds (seconds) within which half, 99 % and all of them were written."""
    buckets = sorted(
        (float(key.rsplit(" ", 1)[1]), count)
        for key, count in metrics.items()
        if key.startswith("send delay le ")
    )
    total = buckets[-1][1] if buckets else 0.0
    summary = {"requests": total}
    for name, share in (("p50_le_s", 0.5), ("p99_le_s", 0.99), ("max_le_s", 1.0)):
        summary[name] = next((bound for bound, n in buckets if n >= share * total), 0.0)
    return summary


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers (an argparse type; empty gives [])."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("give comma-separated integers") from exc
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def print_log_tails(workdir: Path, last: int = 5) -> None:
    """After a failed run: the last lines of every process log the run wrote."""
    for path in sorted(workdir.glob("*.log")):
        lines = path.read_text(errors="replace").strip().splitlines()
        if lines:
            print(f"\nlast lines of {path.name}:", *lines[-last:], sep="\n  ")


def write_report(path: Path | None, report: dict[str, Any] | None) -> None:
    """The `--json` output of a benchmark, when asked for and when there is a report."""
    if path is not None and report is not None:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")


def run_benchmark(
    prefix: str,
    run: Callable[[EmbeddedPostgres, Path], Coroutine[Any, Any, dict[str, Any]]],
    json_path: Path | None,
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    tail_lines: int = 5,
) -> int:
    """A benchmark's whole main: `run` on a throwaway Postgres, the logs' tails if it
    failed, the --json report; exit status 0 only for a report that says ok."""
    report: dict[str, Any] | None = None
    with throwaway_postgres(prefix) as (server, workdir):
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                report = runner.run(run(server, workdir))
        finally:
            if report is None or not report["ok"]:
                print_log_tails(workdir, tail_lines)
    write_report(json_path, report)
    return 0 if report is not None and report["ok"] else 1


@contextlib.contextmanager
def cpu_hog(count: int) -> Iterator[None]:
    """`count` processes that only burn CPU, beside the benchmark: the starved machine a
    busy host or a noisy neighbour makes. Started before and ended after the block."""
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuProbe:
    """CPU seconds used so far by named processes and by Postgres (the postmaster, its live
    children and the ones it reaped)."""

    def __init__(self, postmaster_pid: int, processes: dict[str, int]) -> None:
        self.postmaster = psutil.Process(postmaster_pid)
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}

    def _postgres(self) -> float:
        times = self.postmaster.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += _cpu_seconds(child)
        return total

    def sample(self) -> dict[str, float]:
        sample: dict[str, float] = {}
        for name, process in self.processes.items():
            try:
                sample[name] = _cpu_seconds(process)
            except psutil.NoSuchProcess:
                sample[name] = 0.0
        sample["postgres"] = self._postgres()
        return sample

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before.get(name, 0.0) for name in after}


def git_revision() -> str:
    """The checked-out commit, with "+dirty" when tracked files have uncommitted changes
    (BENCH_REVISION overrides it, for a copy of the tree that is not a git checkout)."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def describe_machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "load_average_1m": os.getloadavg()[0],
        "httpx": httpx.__version__,
        "asyncpg": asyncpg.__version__,
    }


def print_header(meta: dict[str, Any]) -> None:
    print(
        f"{meta['date']}  pollhook {meta['revision']}  {meta['implementation']} "
        f"{meta['python']}  {meta['usable_cores']} usable core(s), "
        f"load {meta['load_average_1m']:.2f}  "
        f"PostgreSQL {meta.get('postgres', '?')} (embedded, unix socket)"
    )


# The sandbox's real-time priority under --sandbox-fifo: any will do, nothing else here is
# real-time.
SANDBOX_FIFO_PRIORITY = 10


def run_first(pid: int) -> None:
    """Every thread of process `pid` on the real-time SCHED_FIFO policy (needs root): woken
    by a request, it runs at once, ahead of every ordinary process. The sandbox, so run,
    stamps arrivals when they arrive, as an upstream with CPUs of its own would, not when a
    starved event loop gets round to them."""
    for thread in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setscheduler(
            int(thread.name), os.SCHED_FIFO, os.sched_param(SANDBOX_FIFO_PRIORITY)
        )
