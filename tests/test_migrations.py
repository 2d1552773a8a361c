from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import migrate
from app.core.db import create_engine
from app.models.delivery import TROUBLED
from app.polling.repository import _CLAIM
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
        "archive_jobs",
        "audit_log",
        "task_polls",
        "activity",
        "inbound_callbacks",
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


async def _plan(engine: AsyncEngine, sql: str, params: dict[str, object] | None = None) -> str:
    async with engine.connect() as conn:
        # Tiny test tables make a sequential scan cheapest; forbid it to see which index the
        # planner can use for the query's shape.
        await conn.execute(text("SET enable_seqscan = off"))
        rows = await conn.execute(text("EXPLAIN " + sql), params or {})
        return "\n".join(r[0] for r in rows)


async def test_hot_paths_use_their_indexes(fresh_engine: AsyncEngine) -> None:
    # A database of its own: the suite's shared one holds whatever rows the tests before left,
    # and the statistics autovacuum took of them can tip the planner to another index (seen
    # once in CI: a sort over uq_tasks_tenant_provider_external_id).
    await migrate.upgrade(fresh_engine)
    due = await _plan(
        fresh_engine,
        "SELECT id FROM tasks WHERE provider = 'minimax' "
        "AND status IN ('pending', 'queued', 'processing') AND next_poll_at <= now() "
        "ORDER BY next_poll_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    assert "ix_tasks_due" in due
    # The poll loop's claim as sent (a module constant: no public name shows its SQL).
    claim = await _plan(
        fresh_engine,
        _CLAIM.text,
        {"provider": "minimax", "limit": 100, "owner": "r1", "lease_s": 30.0},
    )
    # The walk over tenants and each tenant's share; the rest of the batch; the update.
    assert "using ix_tasks_due_tenant on tasks" in claim
    assert "using ix_tasks_due on tasks" in claim
    assert "pk_tasks" in claim
    listing = await _plan(
        fresh_engine,
        "SELECT * FROM tasks WHERE tenant = 'acme' "
        "AND (created_at, id) < (now(), '00000000-0000-0000-0000-000000000000'::uuid) "
        "ORDER BY created_at DESC, id DESC LIMIT 51",
    )
    assert "ix_tasks_tenant_created" in listing
    assert "Sort" not in listing  # the index order is the answer order
    # GET /v1/deliveries and the dashboard's lists (app/webhooks/repository.py, page and
    # troubles), newest first: the troubled ones through their partial index whoever asks,
    # the rest through one tenant's or every tenant's index.
    keyset = (
        "AND (created_at, id) < (now(), '00000000-0000-0000-0000-000000000000'::uuid) "
        "ORDER BY created_at DESC, id DESC LIMIT 51"
    )
    for state in (TROUBLED, "status = 'failed'", "status = 'pending' AND attempts > 0"):
        for scope in ("true", "tenant = 'acme'"):
            troubled = await _plan(
                fresh_engine, f"SELECT * FROM deliveries WHERE {scope} AND ({state}) {keyset}"
            )
            assert "ix_deliveries_troubled" in troubled, (state, scope)
            assert "Sort" not in troubled
    for scope, index in (
        ("true", "ix_deliveries_created"),
        ("tenant = 'acme'", "ix_deliveries_tenant_created"),
    ):
        # (On an empty table the planner may sort a bitmap scan's few rows instead.)
        every = await _plan(fresh_engine, f"SELECT * FROM deliveries WHERE {scope} {keyset}")
        assert index in every, scope
    recent = await _plan(
        fresh_engine,
        "SELECT id FROM deliveries WHERE endpoint_id = '00000000-0000-0000-0000-000000000001' "
        "ORDER BY updated_at DESC LIMIT 40",
    )
    assert "ix_deliveries_endpoint_updated" in recent


async def test_stored_results_get_their_kind(fresh_engine: AsyncEngine) -> None:
    """Results written before results were typed carry no `kind`: the data migration
    infers it from their fields, so the API can read them as the typed result."""
    await migrate.upgrade(fresh_engine, "3f6d2b8e1c47")
    old = {
        "mm": {
            "file_id": "95157322514496",
            "download_url": "https://cdn.example/95157322514496.tar",
            "download_url_expires_at": "2026-03-01T21:00:00Z",
        },
        "jm_audio": {"audio_url": "https://example.com/a.mp3", "subtitle_url": "https://e/s.srt"},
        "jm_clone": {"audio_url": "https://example.com/p.mp3", "model_id": "model_1"},
        "jm_model_only": {"model_id": "model_2"},
        "odd": {"something": "else"},
    }
    async with fresh_engine.begin() as conn:
        for name, result in old.items():
            await conn.execute(
                text(
                    "INSERT INTO tasks (id, tenant, provider, external_id, status, result, "
                    "deadline_at) VALUES (gen_random_uuid(), 'acme', :provider, :name, "
                    "'succeeded', CAST(:result AS jsonb), now())"
                ),
                {"provider": name.split("_")[0], "name": name, "result": json.dumps(result)},
            )
    await migrate.upgrade(fresh_engine)
    async with fresh_engine.connect() as conn:
        rows = await conn.execute(text("SELECT external_id, result FROM tasks"))
        migrated = {r.external_id: r.result for r in rows}
    assert migrated == {
        "mm": {"kind": "minimax_t2a", **old["mm"]},
        "jm_audio": {"kind": "jimmy_soundclone", **old["jm_audio"]},
        "jm_clone": {"kind": "jimmy_soundclone", **old["jm_clone"]},
        "jm_model_only": {"kind": "jimmy_soundclone", **old["jm_model_only"]},
        "odd": old["odd"],
    }
    await migrate.downgrade(fresh_engine, "3f6d2b8e1c47")
    async with fresh_engine.connect() as conn:
        rows = await conn.execute(text("SELECT external_id, result FROM tasks"))
        assert {r.external_id: r.result for r in rows} == old


# The revision before the new-task trigger notified once per statement.
ROW_TRIGGER_REVISION = "5b9e1f3a7c20"
INSERT_TASKS = """
INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at)
SELECT gen_random_uuid(), 'acme', provider, provider || n, 'pending', now()
FROM unnest(ARRAY['minimax', 'jimmy', 'minimax', 'minimax']) WITH ORDINALITY AS t(provider, n)
"""


async def _notifications_of_inserts(engine: AsyncEngine) -> list[str]:
    """The payloads on pollhook_tasks after one statement inserting 4 rows of 2 providers,
    then one inserting nothing, in transactions of their own."""
    received: asyncio.Queue[str] = asyncio.Queue()
    async with engine.connect() as listening, engine.connect() as writing:
        driver = (await listening.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.add_listener("pollhook_tasks", lambda *args: received.put_nowait(args[3]))
        await writing.execute(text(INSERT_TASKS))
        await writing.commit()
        await writing.execute(text(INSERT_TASKS + " WHERE false"))
        await writing.commit()
        # A round trip on the listening connection after the commits: the notifications
        # sent before it have arrived.
        await listening.execute(text("SELECT 1"))
        await writing.execute(text("DELETE FROM tasks"))
        await writing.commit()
    return sorted(received.get_nowait() for _ in range(received.qsize()))


async def _trigger_is_per_row(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        tgtype = await conn.scalar(
            text("SELECT tgtype FROM pg_trigger WHERE tgname = 'tasks_notify_new'")
        )
    return bool(tgtype & 1)  # TRIGGER_TYPE_ROW


async def test_new_tasks_notify_once_per_statement_and_provider(
    fresh_engine: AsyncEngine,
) -> None:
    await migrate.upgrade(fresh_engine)
    assert not await _trigger_is_per_row(fresh_engine)
    assert await _notifications_of_inserts(fresh_engine) == ["jimmy", "minimax"]

    await migrate.downgrade(fresh_engine, ROW_TRIGGER_REVISION)
    assert await _trigger_is_per_row(fresh_engine)
    # Per row, with the identical payloads of one transaction folded into one.
    assert await _notifications_of_inserts(fresh_engine) == ["jimmy", "minimax"]

    await migrate.upgrade(fresh_engine)
    assert not await _trigger_is_per_row(fresh_engine)
