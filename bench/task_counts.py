"""What counting the active tasks costs, with 1M of them: a `/metrics` scrape's read of the
shared state, `GET /v1/providers`, and the forecast refresh that one replica makes per
`model_refresh_s`.

Run from the repository root:

    python -m bench.task_counts [--active 1000000] [--terminal 1000000] [--due-share 0.01]
        [--iterations 30] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, temporary directory under /tmp), migrated,
filled with `--active` non-terminal tasks (pending/queued/processing in equal parts, half
minimax and half jimmy, planned intervals spread uniformly over 1-300 s; `--due-share` of
them due within the last minute, the others due 2 to 3 hours ahead, so none falls due while
the benchmark runs) and `--terminal` finished ones (as `bench.claim_cost` makes them); then
VACUUM ANALYZE, the state autovacuum would reach, and the provider_state rows an engine
writes when it starts.

Measured, each series after two discarded calls, `--iterations` calls in a row, each on a
session of its own as the app makes them:

1. the forecast refresh (`ForecastRefresher.refresh`), as the replica whose turn it is (the
   last forecast's time is cleared before each call, untimed);
2. a scrape's read of the shared state (`read_shared_state`, what `/metrics` and a worker's
   gauge refresh run);
3. `GET /v1/providers` without HTTP (`ProviderService.list`).

The three entry points are the app's own and keep their signatures across revisions, so this
file also measures an earlier revision: copy it into a checkout of that revision and run it
there (docs/benchmarks.md compares the two that way). The run is ok when the scrape's task
counts and due backlog equal the table's, counted directly at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.service import Caller
from app.budget.repository import BudgetRepository
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.embedded import EmbeddedPostgres
from app.core.metrics import SharedSnapshot
from app.health.service import read_shared_state
from app.models import Role
from app.providers.registry import adapter_for
from app.providers.service import ProviderService
from app.schedule.forecasts import Forecasts
from app.schedule.refresh import ForecastRefresher
from bench._support import begin, connect, percentile, run_benchmark
from bench.claim_cost import INSERT_TERMINAL, insert_rows

WARMUP = 2
# Nothing is sent upstream here; the instances point at a closed local port all the same.
NOWHERE = "http://127.0.0.1:9"

INSERT_ACTIVE = """
INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, next_poll_at,
                   poll_interval_s)
SELECT gen_random_uuid(), 'tenant-' || (g / 2) % 100,
       CASE WHEN g % 2 = 0 THEN 'minimax' ELSE 'jimmy' END,
       'a' || g,
       (ARRAY['pending', 'queued', 'processing'])[1 + (g / 2) % 3],
       now() + interval '6 hours',
       CASE WHEN random() < $3 THEN now() - random() * interval '1 minute'
            ELSE now() + interval '2 hours' + random() * interval '1 hour' END,
       1 + random() * 299
FROM generate_series($1::bigint, $2::bigint) AS g
"""

COUNTS = """
SELECT provider, status, count(*) AS n,
       count(*) FILTER (WHERE next_poll_at <= now()) AS due
FROM tasks
WHERE status IN ('pending', 'queued', 'processing')
GROUP BY provider, status
"""

# GET /v1/providers as an operator sees it: every instance with its internals.
OPERATOR = Caller("bench", Role.OPERATOR)


@dataclass
class Options:
    active: int
    terminal: int
    due_share: float
    iterations: int
    json_path: Path | None


@dataclass
class Series:
    name: str
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def bench_settings(server: EmbeddedPostgres) -> Settings:
    return Settings(
        database_url=server.url,
        providers={"minimax": {"base_url": NOWHERE}, "jimmy": {"base_url": NOWHERE}},
        log_level="WARNING",
    )


async def fill(conn: asyncpg.Connection, options: Options) -> dict[str, float]:
    return await insert_rows(
        conn,
        [
            ("active", INSERT_ACTIVE, options.active, options.due_share),
            ("terminal", INSERT_TERMINAL, options.terminal, 100),
        ],
    )


async def measure(
    name: str,
    call: Callable[[], Awaitable[object]],
    iterations: int,
    *,
    before: Callable[[], Awaitable[object]] | None = None,
) -> Series:
    """`call` timed `iterations` times; `before`, when given, is run untimed before each."""
    timings: list[float] = []
    for n in range(WARMUP + iterations):
        if before is not None:
            await before()
        started = time.perf_counter()
        await call()
        if n >= WARMUP:
            timings.append((time.perf_counter() - started) * 1000)
    ordered = sorted(timings)
    series = Series(
        name=name,
        iterations=len(ordered),
        p50_ms=percentile(ordered, 50),
        p90_ms=percentile(ordered, 90),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1],
        mean_ms=sum(ordered) / len(ordered),
    )
    print(
        f"  {name:<34} p50 {series.p50_ms:8.1f} ms  p90 {series.p90_ms:8.1f}  "
        f"p99 {series.p99_ms:8.1f}  max {series.max_ms:8.1f}  ({series.iterations} calls)",
        flush=True,
    )
    return series


async def run(server: EmbeddedPostgres, options: Options) -> dict[str, Any]:
    meta = await begin(
        server,
        active=options.active,
        terminal=options.terminal,
        due_share=options.due_share,
        iterations=options.iterations,
    )
    conn = await connect(server)
    settings = bench_settings(server)
    engine = create_engine(server.url, pool_size=settings.db_pool_size)
    sessions: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
    try:
        print(
            f"filling: {options.active:,} active + {options.terminal:,} terminal tasks, "
            f"{options.due_share:.1%} of the active ones due ...",
            flush=True,
        )
        timings = await fill(conn, options)
        print(f"  setup: {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}")
        async with sessions.begin() as session:
            await BudgetRepository(session).ensure_rows(settings.providers)

        refresher = ForecastRefresher(
            settings,
            sessions,
            Forecasts(ttl_s=settings.engine.model_refresh_s),
            {
                name: adapter_for(p.kind).requests_per_success
                for name, p in settings.providers.items()
            },
        )

        async def lead_next() -> None:
            await conn.execute("UPDATE provider_state SET forecast_at = NULL")

        async def scrape() -> SharedSnapshot:
            async with sessions() as session:
                return await read_shared_state(session, settings)

        async def providers() -> object:
            async with sessions() as session:
                return await ProviderService(session, settings).list(OPERATOR)

        print("\nTimed:")
        series = [
            await measure(
                "forecast refresh", refresher.refresh, options.iterations, before=lead_next
            ),
            await measure("scrape: read_shared_state", scrape, options.iterations),
            await measure("GET /v1/providers: list", providers, options.iterations),
        ]

        snapshot = await scrape()
        rows = await conn.fetch(COUNTS)
        table = {(r["provider"], r["status"]): (r["n"], r["due"]) for r in rows}
        counted = {
            (p.name, status): n
            for p in snapshot.providers
            for status, n in (p.tasks_by_status or {}).items()
            if n
        }
        due = {p.name: p.due_backlog for p in snapshot.providers}
        due_in_table = {
            name: sum(d for (provider, _), (_, d) in table.items() if provider == name)
            for name in due
        }
        ok = counted == {key: n for key, (n, _) in table.items()} and due == due_in_table
        print(f"\n  active tasks per (provider, status): {dict(sorted(counted.items()))}")
        print(f"  due backlog: {due}")
        print(f"  the scrape's counts equal the table's: {'yes' if ok else 'NO'}")
    finally:
        await engine.dispose()
        await conn.close()
    return {
        "meta": meta,
        "setup": timings,
        "series": [asdict(s) for s in series],
        "due_backlog": due,
        "ok": ok,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.task_counts",
        description="What a /metrics scrape, GET /v1/providers and the forecast refresh cost "
        "with many active tasks.",
    )
    parser.add_argument("--active", type=int, default=1_000_000, help="non-terminal tasks")
    parser.add_argument("--terminal", type=int, default=1_000_000, help="terminal tasks")
    parser.add_argument(
        "--due-share", type=float, default=0.01, help="share of the active tasks due now"
    )
    parser.add_argument("--iterations", type=int, default=30, help="timed calls per series")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.active < 1 or args.terminal < 0 or not 0 <= args.due_share <= 1:
        parser.error("--active must be positive, --due-share within 0..1")
    if args.iterations < 1:
        parser.error("--iterations must be positive")
    return Options(
        active=args.active,
        terminal=args.terminal,
        due_share=args.due_share,
        iterations=args.iterations,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-counts-", lambda server, _: run(server, options), options.json_path
    )


if __name__ == "__main__":
    sys.exit(main())
