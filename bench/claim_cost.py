"""Claim query cost with 1M non-terminal tasks in the table: the plan and p50/p99 latency of
the poll loop's claim, next to the same statement on bare asyncpg and a plain SELECT of the
due rows.

Run from the repository root:

    python -m bench.claim_cost [--active 1000000] [--terminal 1000000] [--tenants 100]
        [--iterations 500] [--json PATH]

Setup: a throwaway embedded Postgres (unix socket, temporary directory under /tmp), migrated,
filled with `--active` non-terminal tasks (pending/queued/processing in equal parts, half
minimax and half jimmy, next_poll_at spread uniformly over now +- 1 h, so about a quarter of
the rows are due minimax tasks) and `--terminal` finished ones (succeeded/failed/expired/
timed_out/cancelled, next_poll_at NULL) that the partial indexes ix_tasks_due and
ix_tasks_due_tenant leave out; every kind of row spread evenly over `--tenants` tenants
(the claim shares a batch between the tenants with tasks due, so its cost depends on their
number); then VACUUM ANALYZE, the state autovacuum would reach.

Measured, each after a discarded warm-up, in the order below:

1. on an unchanging table, interleaved per iteration (the order rotates):
   * the real claim: `PollingRepository(session).claim_due("minimax", limit=100, ...)` in its
     own SQLAlchemy transaction, rolled back;
   * the baseline through the same path: `SELECT id FROM tasks WHERE provider = ... AND
     status IN (...) AND next_poll_at <= now() ORDER BY next_poll_at LIMIT 100` (no lock, no
     update), rolled back;
   * both statements again on a bare asyncpg connection (no SQLAlchemy, no pool), to split
     the server's share from the client's;
   * the claim as it was before it was shared between tenants (oldest due first: the
     `claim_statement` shape deliveries use, on the tasks table), rolled back, through the
     same path: what the fair shares cost;
2. with churn, interleaved: the real claim committed, as the engine does it (each claim
   moves 100 due tasks a lease ahead, leaving dead index entries for the next claim to step
   over until they are pruned), the same captured statement committed on a bare asyncpg
   connection, and the baseline SELECT. The target: the real claim's p99 within 1.5 x the
   bare asyncpg one's (what pollhook's own path adds to the statement).

Why both: rolling back keeps every iteration on the same data, so the numbers are the plan's
cost and repeat run to run; but the engine commits, so the committed series is the one that
includes what production pays (the WAL flush at commit, the dead row versions of earlier
claims). EXPLAIN (ANALYZE, BUFFERS) of both statements is printed (the claim inside a
transaction that is rolled back); the claim's SQL is captured from the real call, not copied.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.embedded import EmbeddedPostgres
from app.core.repository import claim_statement
from app.polling.repository import PollingRepository
from bench._support import (
    begin,
    connect,
    percentile,
    run_benchmark,
)

PROVIDER = "minimax"
LIMIT = 100
LEASE_S = 30.0
OWNER = "bench-claim-cost"
INSERT_CHUNK = 250_000
WARMUP = 20
# The target: the claim's p99 through pollhook within this factor of the same
# statement on bare asyncpg, both committed.
TARGET_P99_RATIO = 1.5
CLAIM_COMMITTED = "claim_due (SQLAlchemy), committed"
RAW_COMMITTED = "claim SQL (asyncpg), committed"

BASELINE_SQL = """
SELECT id FROM tasks
WHERE provider = $1
  AND status IN ('pending', 'queued', 'processing')
  AND next_poll_at <= now()
ORDER BY next_poll_at
LIMIT $2
"""

INSERT_ACTIVE = """
INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, next_poll_at)
SELECT gen_random_uuid(), 'tenant-' || (g / 2) % $3,
       CASE WHEN g % 2 = 0 THEN 'minimax' ELSE 'jimmy' END,
       'a' || g,
       (ARRAY['pending', 'queued', 'processing'])[1 + (g / 2) % 3],
       now() + interval '6 hours',
       now() + (random() * 2 - 1) * interval '1 hour'
FROM generate_series($1::bigint, $2::bigint) AS g
"""

INSERT_TERMINAL = """
INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, next_poll_at,
                   completed_at, polls, sequence)
SELECT gen_random_uuid(), 'tenant-' || (g / 2) % $3,
       CASE WHEN g % 2 = 0 THEN 'minimax' ELSE 'jimmy' END,
       't' || g,
       (ARRAY['succeeded', 'failed', 'expired', 'timed_out', 'cancelled'])[1 + (g / 2) % 5],
       now() - interval '1 day',
       NULL,
       now() - random() * interval '7 days', 5, 2
FROM generate_series($1::bigint, $2::bigint) AS g
"""


@dataclass
class Options:
    active: int
    terminal: int
    tenants: int
    iterations: int
    json_path: Path | None


@dataclass
class Series:
    name: str
    iterations: int
    rows_per_call: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarise(name: str, samples_ms: list[float], rows: list[int]) -> Series:
    ordered = sorted(samples_ms)
    return Series(
        name=name,
        iterations=len(ordered),
        rows_per_call=sum(rows) / len(rows) if rows else 0.0,
        p50_ms=percentile(ordered, 50),
        p90_ms=percentile(ordered, 90),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1] if ordered else 0.0,
        mean_ms=sum(ordered) / len(ordered) if ordered else 0.0,
    )


# --- filling the table ------------------------------------------------------------------------


async def insert_rows(
    conn: asyncpg.Connection, batches: Sequence[tuple[str, str, int, object]]
) -> dict[str, float]:
    """Each batch's rows, `(label, an INSERT ... SELECT over generate_series($1, $2) with a
    third parameter, rows, that parameter)`, INSERT_CHUNK at a time without waiting on the
    WAL, then VACUUM ANALYZE; the timings."""
    timings: dict[str, float] = {}
    await conn.execute("SET synchronous_commit = off")
    for label, sql, total, parameter in batches:
        started = time.perf_counter()
        for low in range(1, total + 1, INSERT_CHUNK):
            high = min(total, low + INSERT_CHUNK - 1)
            await conn.execute(sql, low, high, parameter)
            print(f"    {label}: {high:,}/{total:,} rows", flush=True)
        timings[f"insert {label} s"] = time.perf_counter() - started
    await conn.execute("RESET synchronous_commit")
    started = time.perf_counter()
    await conn.execute("VACUUM (ANALYZE) tasks")
    timings["vacuum analyze s"] = time.perf_counter() - started
    return timings


async def fill(conn: asyncpg.Connection, options: Options) -> dict[str, float]:
    return await insert_rows(
        conn,
        [
            ("active", INSERT_ACTIVE, options.active, options.tenants),
            ("terminal", INSERT_TERMINAL, options.terminal, options.tenants),
        ],
    )


async def describe_table(conn: asyncpg.Connection) -> dict[str, Any]:
    counts = await conn.fetch(
        """
        SELECT provider,
               count(*) FILTER (WHERE status IN ('pending', 'queued', 'processing')) AS active,
               count(*) FILTER (WHERE status IN ('pending', 'queued', 'processing')
                                  AND next_poll_at <= now()) AS due,
               count(*) FILTER (WHERE status NOT IN ('pending', 'queued', 'processing'))
                 AS terminal
        FROM tasks GROUP BY provider ORDER BY provider
        """
    )
    sizes = await conn.fetch(
        """
        SELECT c.relname, c.reltuples::bigint AS entries, pg_relation_size(c.oid) AS bytes
        FROM pg_class c
        WHERE c.relname IN ('tasks', 'ix_tasks_due', 'ix_tasks_due_tenant', 'pk_tasks',
                            'uq_tasks_tenant_provider_external_id', 'ix_tasks_tenant_created')
        ORDER BY c.relname
        """
    )
    return {
        "rows": {r["provider"]: dict(r) for r in counts},
        "relations": {r["relname"]: {"entries": r["entries"], "bytes": r["bytes"]} for r in sizes},
    }


# --- measuring --------------------------------------------------------------------------------


def capture_claim_sql(engine: AsyncEngine) -> dict[str, Any]:
    """Record the SQL and parameters the real claim_due sends (the asyncpg driver's form)."""
    captured: dict[str, Any] = {}

    def before_cursor_execute(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> None:
        if "FOR UPDATE SKIP LOCKED" in statement and "statement" not in captured:
            captured["statement"] = statement
            captured["parameters"] = parameters

    event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    return captured


async def timed(operation: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    started = time.perf_counter_ns()
    rows = await operation()
    return (time.perf_counter_ns() - started) / 1e6, rows


async def measure_interleaved(
    operations: dict[str, Callable[[], Awaitable[int]]], iterations: int
) -> list[Series]:
    names = list(operations)
    for _ in range(WARMUP):
        for name in names:
            await operations[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    rows: dict[str, list[int]] = {name: [] for name in names}
    for i in range(iterations):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            ms, n = await timed(operations[name])
            samples[name].append(ms)
            rows[name].append(n)
    return [summarise(name, samples[name], rows[name]) for name in names]


def sqlalchemy_claim(
    sessions: async_sessionmaker[AsyncSession], *, commit: bool
) -> Callable[[], Awaitable[int]]:
    async def claim() -> int:
        async with sessions() as session:
            await session.begin()
            claims = await PollingRepository(session).claim_due(
                PROVIDER, limit=LIMIT, owner=OWNER, lease_s=LEASE_S
            )
            if commit:
                await session.commit()
            else:
                await session.rollback()
        return len(claims)

    return claim


def oldest_first_claim(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], Awaitable[int]]:
    """The claim before it was shared between tenants: the queue shape deliveries still use,
    on the tasks table, through the same path as claim_due; rolled back."""
    statement = claim_statement(
        table="tasks",
        due_column="next_poll_at",
        where="provider = :provider AND status IN ('pending', 'queued', 'processing')",
        returning="c.id",
    )
    parameters = {"provider": PROVIDER, "limit": LIMIT, "owner": OWNER, "lease_s": LEASE_S}

    async def claim() -> int:
        async with sessions() as session:
            await session.begin()
            rows = (await session.execute(statement, parameters)).all()
            await session.rollback()
        return len(rows)

    return claim


def sqlalchemy_select(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], Awaitable[int]]:
    statement = text(BASELINE_SQL.replace("$1", ":provider").replace("$2", ":limit")).bindparams(
        provider=PROVIDER, limit=LIMIT
    )

    async def select() -> int:
        async with sessions() as session:
            await session.begin()
            rows = (await session.execute(statement)).all()
            await session.rollback()
        return len(rows)

    return select


def raw_claim(
    conn: asyncpg.Connection, captured: dict[str, Any], *, commit: bool
) -> Callable[[], Awaitable[int]]:
    async def claim() -> int:
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await conn.fetch(captured["statement"], *captured["parameters"])
        except BaseException:
            await transaction.rollback()
            raise
        if commit:
            await transaction.commit()
        else:
            await transaction.rollback()
        return len(rows)

    return claim


def raw_select(conn: asyncpg.Connection) -> Callable[[], Awaitable[int]]:
    async def select() -> int:
        return len(await conn.fetch(BASELINE_SQL, PROVIDER, LIMIT))

    return select


async def explain(conn: asyncpg.Connection, statement: str, parameters: Any) -> str:
    transaction = conn.transaction()
    await transaction.start()
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *parameters)
    finally:
        await transaction.rollback()
    return "\n".join(str(r[0]) for r in rows)


# --- the run ----------------------------------------------------------------------------------


def print_series(
    title: str, series: list[Series], pairs: list[tuple[str, str]]
) -> dict[str, float]:
    """The table, then p50 and p99 ratios of each (claim, baseline) pair."""
    print()
    print(title)
    header = (
        f"{'':<40} {'calls':>5} {'rows':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'mean ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for s in series:
        print(
            f"{s.name:<40} {s.iterations:>5} {s.rows_per_call:>5.0f} {s.p50_ms:>7.2f} "
            f"{s.p90_ms:>7.2f} {s.p99_ms:>7.2f} {s.max_ms:>7.2f} {s.mean_ms:>7.2f}"
        )
    by_name = {s.name: s for s in series}
    ratios: dict[str, float] = {}
    for claim_name, base_name in pairs:
        claim, base = by_name[claim_name], by_name[base_name]
        if base.p50_ms > 0 and base.p99_ms > 0:
            key = f"{claim_name} / {base_name}"
            ratios[f"{key} p50"] = claim.p50_ms / base.p50_ms
            ratios[f"{key} p99"] = claim.p99_ms / base.p99_ms
            print(
                f"  {key}: p50 {claim.p50_ms / base.p50_ms:.2f}x, "
                f"p99 {claim.p99_ms / base.p99_ms:.2f}x"
            )
    return ratios


async def run(server: EmbeddedPostgres, options: Options) -> dict[str, Any]:
    meta = await begin(
        server,
        active=options.active,
        terminal=options.terminal,
        tenants=options.tenants,
        iterations=options.iterations,
    )
    conn = await connect(server)
    engine = create_engine(server.url)
    try:
        print(
            f"filling: {options.active:,} active + {options.terminal:,} terminal tasks of "
            f"{options.tenants:,} tenant(s) ...",
            flush=True,
        )
        timings = await fill(conn, options)
        table = await describe_table(conn)
        print(f"  setup: {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}")
        for provider, counts in table["rows"].items():
            print(
                f"  {provider}: {counts['active']:,} active ({counts['due']:,} due now), "
                f"{counts['terminal']:,} terminal"
            )
        for name, info in table["relations"].items():
            print(f"  {name}: {info['entries']:,} entries, {info['bytes'] / 2**20:.1f} MiB")

        sessions = create_sessionmaker(engine)
        captured = capture_claim_sql(engine)
        await sqlalchemy_claim(sessions, commit=False)()
        print("\nThe claim as sent (captured from PollingRepository.claim_due):")
        print(captured["statement"].strip())
        print(f"parameters: {captured['parameters']}")
        plans = {
            "claim": await explain(conn, captured["statement"], captured["parameters"]),
            "baseline": await explain(conn, BASELINE_SQL, (PROVIDER, LIMIT)),
        }
        for name, plan in plans.items():
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name}:\n{plan}")

        static = await measure_interleaved(
            {
                "claim_due (SQLAlchemy), rolled back": sqlalchemy_claim(sessions, commit=False),
                "oldest-first claim, rolled back": oldest_first_claim(sessions),
                "baseline SELECT (SQLAlchemy)": sqlalchemy_select(sessions),
                "claim SQL (asyncpg), rolled back": raw_claim(conn, captured, commit=False),
                "baseline SELECT (asyncpg)": raw_select(conn),
            },
            options.iterations,
        )
        ratios = print_series(
            "Unchanging table (claims rolled back):",
            static,
            [
                ("claim_due (SQLAlchemy), rolled back", "baseline SELECT (SQLAlchemy)"),
                ("claim_due (SQLAlchemy), rolled back", "oldest-first claim, rolled back"),
                ("claim SQL (asyncpg), rolled back", "baseline SELECT (asyncpg)"),
            ],
        )
        churn = await measure_interleaved(
            {
                CLAIM_COMMITTED: sqlalchemy_claim(sessions, commit=True),
                RAW_COMMITTED: raw_claim(conn, captured, commit=True),
                "baseline SELECT (SQLAlchemy), churn": sqlalchemy_select(sessions),
            },
            options.iterations,
        )
        ratios.update(
            print_series(
                "With churn (claims committed, as the engine does):",
                churn,
                [
                    (CLAIM_COMMITTED, RAW_COMMITTED),
                    (CLAIM_COMMITTED, "baseline SELECT (SQLAlchemy), churn"),
                ],
            )
        )
        target = ratios[f"{CLAIM_COMMITTED} / {RAW_COMMITTED} p99"]
        verdict = "met" if target <= TARGET_P99_RATIO else "MISSED"
        print(
            f"\n  target: claim p99 <= {TARGET_P99_RATIO:g} x the same statement on bare "
            f"asyncpg, committed: {target:.2f}x, {verdict}"
        )
        claimed = await conn.fetchval("SELECT count(*) FROM tasks WHERE lease_owner = $1", OWNER)
        print(f"\n  tasks claimed by the committed series: {claimed:,}")
        plans["claim after churn"] = await explain(
            conn, captured["statement"], captured["parameters"]
        )
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) claim after churn:\n{plans['claim after churn']}")
    finally:
        await engine.dispose()
        await conn.close()
    return {
        "meta": meta,
        "setup": timings,
        "table": table,
        "claim_sql": captured.get("statement"),
        "plans": plans,
        "static": [asdict(s) for s in static],
        "churn": [asdict(s) for s in churn],
        "ratios": ratios,
        "target_p99_ratio": TARGET_P99_RATIO,
        "ok": True,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.claim_cost",
        description="EXPLAIN and p50/p99 of the poll loop's claim over a large tasks table, "
        "next to a plain SELECT of the same due rows.",
    )
    parser.add_argument("--active", type=int, default=1_000_000, help="non-terminal tasks")
    parser.add_argument("--terminal", type=int, default=1_000_000, help="terminal tasks")
    parser.add_argument(
        "--tenants", type=int, default=100, help="tenants the tasks are spread over"
    )
    parser.add_argument("--iterations", type=int, default=500, help="timed calls per series")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.active < 1000 or args.terminal < 0 or args.iterations < 10 or args.tenants < 1:
        parser.error(
            "--active must be at least 1000, --iterations at least 10, --tenants at least 1"
        )
    return Options(
        active=args.active,
        terminal=args.terminal,
        tenants=args.tenants,
        iterations=args.iterations,
        json_path=args.json,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return run_benchmark(
        "pollhook-bench-claim-", lambda server, _: run(server, options), options.json_path
    )


if __name__ == "__main__":
    sys.exit(main())
