"""Shared plumbing of the engine benchmarks (engine_throughput, budget_accuracy, claim_cost).

A throwaway embedded Postgres, the sandbox as a subprocess, the task rows those benchmarks
load, CPU accounting per process and a description of the machine. Nothing here measures;
the benchmark modules do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import httpx
import psutil

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


# --- the sandbox ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Sandbox:
    """`python -m app.cli sandbox` as a subprocess, and a client for its control API."""

    def __init__(self, port: int, process: asyncio.subprocess.Process) -> None:
        self.port = port
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=60.0)

    @classmethod
    async def start(
        cls, *, minimax_rate: float, log: TextIO, jimmy_rate: float = 0.0, seed: int = 1
    ) -> Sandbox:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLLHOOK_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "sandbox",
            "--port",
            str(port),
            "--minimax-rate",
            f"{minimax_rate:g}",
            "--jimmy-rate",
            f"{jimmy_rate:g}",
            "--seed",
            str(seed),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        sandbox = cls(port, process)
        try:
            await sandbox._wait_ready()
        except BaseException:
            await sandbox.stop()
            raise
        return sandbox

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"the sandbox exited with status {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get("/_sandbox/health", timeout=2.0)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the sandbox was not ready after {READY_TIMEOUT_S:.0f} s")

    async def stop(self) -> None:
        await self.http.aclose()
        await stop_process(self.process, "sandbox")

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
) -> int:
    """A benchmark's whole main: `run` on a throwaway Postgres, the logs' tails if it
    failed, the --json report; exit status 0 only for a report that says ok."""
    report: dict[str, Any] | None = None
    with throwaway_postgres(prefix) as (server, workdir):
        try:
            report = asyncio.run(run(server, workdir))
        finally:
            if report is None or not report["ok"]:
                print_log_tails(workdir)
    write_report(json_path, report)
    return 0 if report is not None and report["ok"] else 1


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
