from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import migrate
from app.core.db import create_engine
from tests.helpers import PgServer


@pytest_asyncio.fixture
async def fresh_engine(pg_server: PgServer) -> AsyncIterator[AsyncEngine]:
    name = f"pollhook_mig_{uuid.uuid4().hex[:8]}"
    await pg_server.create_database(name)
    engine = create_engine(pg_server.url_for(name))
    try:
        yield engine
    finally:
        await engine.dispose()
        await pg_server.drop_database(name)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        return {r[0] for r in rows}


async def test_upgrade_matches_models_and_round_trips(fresh_engine: AsyncEngine) -> None:
    await migrate.upgrade(fresh_engine)
    await migrate.check(fresh_engine)  # raises if models and migrations disagree
    head = await migrate.current_revision(fresh_engine)
    assert head is not None
    expected = {
        "alembic_version",
        "tasks",
        "events",
        "webhook_endpoints",
        "tenant_secrets",
        "deliveries",
        "delivery_attempts",
        "api_keys",
        "provider_state",
        "completion_samples",
        "completion_profiles",
    }
    assert await _tables(fresh_engine) == expected

    await migrate.downgrade(fresh_engine, "base")
    assert await _tables(fresh_engine) == {"alembic_version"}
    assert await migrate.current_revision(fresh_engine) is None

    await migrate.upgrade(fresh_engine)
    await migrate.check(fresh_engine)
    assert await migrate.current_revision(fresh_engine) == head


async def test_upgrade_is_idempotent(fresh_engine: AsyncEngine) -> None:
    await migrate.upgrade(fresh_engine)
    await migrate.upgrade(fresh_engine)
    await migrate.check(fresh_engine)


async def _plan(engine: AsyncEngine, sql: str) -> str:
    async with engine.connect() as conn:
        # Tiny test tables make a sequential scan cheapest; forbid it to see which index the
        # planner can use for the query's shape.
        await conn.execute(text("SET enable_seqscan = off"))
        rows = await conn.execute(text("EXPLAIN " + sql))
        return "\n".join(r[0] for r in rows)


async def test_hot_paths_use_their_indexes(engine: AsyncEngine) -> None:
    due = await _plan(
        engine,
        "SELECT id FROM tasks WHERE provider = 'minimax' "
        "AND status IN ('pending', 'queued', 'processing') AND next_poll_at <= now() "
        "ORDER BY next_poll_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    assert "ix_tasks_due" in due
    listing = await _plan(
        engine,
        "SELECT * FROM tasks WHERE tenant = 'acme' "
        "AND (created_at, id) < (now(), '00000000-0000-0000-0000-000000000000'::uuid) "
        "ORDER BY created_at DESC, id DESC LIMIT 51",
    )
    assert "ix_tasks_tenant_created" in listing
    assert "Sort" not in listing  # the index order is the answer order
