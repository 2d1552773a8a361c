"""The activity table's reads and its pruning, on Postgres: per minute, the last seconds,
and bucket counts summed element by element over processes and instances."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_sessionmaker
from app.overview.repository import ActivityRepository, Counts


async def _add(
    engine: AsyncEngine, process: str, ago_s: float, *rows: tuple[str | None, Counts]
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        await ActivityRepository(session).add(process, list(rows))
    async with engine.begin() as conn:
        # Stamped `ago_s` back: the rows just written are the ones without a past yet.
        await conn.execute(
            text(
                "UPDATE activity SET at = now() - make_interval(secs => :ago)"
                " WHERE at >= now() - interval '1 second' AND process = :process"
            ),
            {"ago": ago_s, "process": process},
        )


async def test_sums_over_processes_per_instance_and_minute(engine: AsyncEngine) -> None:
    await _add(
        engine, "a", 10, ("minimax", Counts(polls=3, succeeded=1)), (None, Counts(delivered=2))
    )
    await _add(engine, "b", 20, ("minimax", Counts(polls=4, poll_errors=1)))
    await _add(engine, "c", 30, ("jimmy", Counts(polls=5, failed=2)))
    # Older than the last minute: in the hour's series, not in the rates.
    await _add(engine, "d", 600, ("minimax", Counts(polls=100)))
    # A day old: in neither, and pruned.
    await _add(engine, "e", 25 * 3600, ("minimax", Counts(polls=1000)))

    async with create_sessionmaker(engine).begin() as session:
        repo = ActivityRepository(session)
        recent = await repo.recent(60)
        hour = await repo.per_minute(60)
        pruned = await repo.prune(24 * 3600)
    assert {
        k: (c.polls, c.poll_errors, c.succeeded, c.failed, c.delivered) for k, c in recent.items()
    } == {
        "minimax": (7, 1, 1, 0, 0),
        "jimmy": (5, 0, 0, 2, 0),
        None: (0, 0, 0, 0, 2),
    }
    assert sum(m.counts.polls for m in hour) == 112
    assert sum(m.counts.polls for m in hour if m.provider == "minimax") == 107
    assert [m.minute for m in hour] == sorted(m.minute for m in hour)
    assert pruned == 1


async def test_buckets_sum_element_by_element(engine: AsyncEngine) -> None:
    await _add(engine, "a", 5, ("minimax", Counts(polls=1, detection_gap=[1, 0, 2])))
    await _add(engine, "b", 5, ("jimmy", Counts(polls=1, detection_gap=[0, 4, 1])))
    await _add(engine, "a", 5, (None, Counts(delivered=1, delivery_latency=[0, 0, 0, 1])))
    await _add(engine, "a", 7200, ("minimax", Counts(polls=1, detection_gap=[100, 0, 0])))
    async with create_sessionmaker(engine).begin() as session:
        gap, latency = await ActivityRepository(session).buckets(60)
    # The longer array sets the length; a shorter one adds nothing there.
    assert gap == [1, 4, 3, 0]
    assert latency == [0, 0, 0, 1]
