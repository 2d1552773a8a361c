"""TaskRepository.list_page: one tenant's page and every tenant's, their filters, and the
indexes their statements use (1M tasks: every page is an index walk with a LIMIT)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.models import Task
from app.tasks.repository import TaskFilters, TaskRepository

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(tenant: str, n: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant": tenant,
        "provider": "jimmy",
        "external_id": f"{tenant}-{int(n)}",
        "status": "pending",
        "created_at": T0 + timedelta(minutes=n),
        "updated_at": T0,
        "deadline_at": T0 + timedelta(days=1),
        **fields,
    }


@pytest_asyncio.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    rows = [_row("acme", n) for n in range(5)] + [
        _row("other", n + 0.5, provider="minimax") for n in (1, 3)
    ]
    rows.append(_row("zeta", 9, status="failed"))
    async with engine.begin() as conn:
        await conn.execute(insert(Task), rows)
    async with async_sessionmaker(engine)() as session:
        yield session


def _ids(tasks: list[Task]) -> list[str]:
    return [t.external_id for t in tasks]


async def test_every_tenants_page_merges_them_newest_first(session: AsyncSession) -> None:
    repo = TaskRepository(session)
    first = await repo.list_page(None, limit=3)
    assert _ids(first) == ["zeta-9", "acme-4", "other-3"]
    after = (first[-1].created_at, first[-1].id)
    assert _ids(await repo.list_page(None, limit=3, after=after)) == ["acme-3", "acme-2", "other-1"]


async def test_filters(session: AsyncSession) -> None:
    repo = TaskRepository(session)
    assert _ids(
        await repo.list_page(
            "acme",
            limit=10,
            filters=TaskFilters(external_id="acme-2", providers=("jimmy", "minimax")),
        )
    ) == ["acme-2"]
    assert _ids(await repo.list_page(None, limit=10, filters=TaskFilters(provider="minimax"))) == [
        "other-3",
        "other-1",
    ]
    assert _ids(await repo.list_page(None, limit=10, filters=TaskFilters(status="failed"))) == [
        "zeta-9"
    ]
    window = TaskFilters(
        created_from=T0 + timedelta(minutes=1), created_before=T0 + timedelta(minutes=3)
    )
    assert _ids(await repo.list_page("acme", limit=10, filters=window)) == ["acme-2", "acme-1"]
    assert _ids(await repo.list_page(None, limit=10, filters=window)) == [
        "acme-2",
        "other-1",
        "acme-1",
    ]
    assert await repo.list_page("nobody", limit=10) == []


async def _plan_of_call(engine: AsyncEngine, call: Any) -> str:
    """The plan of the statement `call` sends, with sequential scans off (tiny tables make
    them cheapest; the question is which index the statement's shape can use)."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        async with async_sessionmaker(engine)() as session:
            await call(TaskRepository(session))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)
    statement, parameters = sent[-1]
    async with engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(r[0] for r in rows)


async def test_pages_walk_the_listing_indexes(engine: AsyncEngine) -> None:
    # Enough rows of two tenants, with statistics, that the planner weighs them as with real
    # tables: a walk of every tenant's rows for one tenant's page, or of one tenant's rows
    # for an external id, costs more than the index made for it.
    async with engine.begin() as conn:
        rows = [
            _row(
                tenant,
                n / 100,
                external_id=f"bulk-{n}",
                status="failed" if n % 500 == 0 else "succeeded",
            )
            for tenant in ("acme", "other")
            for n in range(5000)
        ]
        await conn.execute(insert(Task), rows)
        await conn.execute(text("ANALYZE tasks"))
    after = (T0 + timedelta(days=10), uuid.UUID(int=0))
    by_id = TaskFilters(external_id="x", providers=("jimmy", "minimax"))
    one = await _plan_of_call(engine, lambda r: r.list_page("acme", limit=51, after=after))
    every = await _plan_of_call(engine, lambda r: r.list_page(None, limit=51, after=after))
    one_by_id = await _plan_of_call(engine, lambda r: r.list_page("acme", limit=51, filters=by_id))
    every_by_id = await _plan_of_call(engine, lambda r: r.list_page(None, limit=51, filters=by_id))
    assert "ix_tasks_tenant_created" in one, one
    assert "ix_tasks_created" in every, every
    for plan in (one, every):
        assert "Sort" not in plan, plan  # the index order is the answer order
    for plan in (one_by_id, every_by_id):
        assert "uq_tasks_tenant_provider_external_id" in plan, plan
    # A status few of a tenant's tasks have is a walk of those only.
    failed = TaskFilters(status="failed")
    one_failed = await _plan_of_call(
        engine, lambda r: r.list_page("acme", limit=51, filters=failed)
    )
    assert "ix_tasks_ended_badly" in one_failed, one_failed
    assert "Sort" not in one_failed, one_failed
    for plan in (one, every, one_by_id, every_by_id, one_failed):
        assert "Seq Scan" not in plan, plan
