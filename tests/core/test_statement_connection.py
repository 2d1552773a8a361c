"""StatementConnection on real Postgres: one kept connection, each statement its own
transaction; a failure drops the connection so the next unit of work gets a new one, and a
connection the server closed is replaced before it is used."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import StatementConnection
from tests.helpers import eventually

BACKEND = text("SELECT pg_backend_pid()")
TRANSACTION = text("SELECT txid_current()")


async def test_one_kept_connection_each_statement_its_own_transaction(
    engine: AsyncEngine,
) -> None:
    kept = StatementConnection(engine)
    try:
        async with kept.session() as session:
            backend = await session.scalar(BACKEND)
            first = await session.scalar(TRANSACTION)
            second = await session.scalar(TRANSACTION)
        async with kept.session() as session:
            again = await session.scalar(BACKEND)
    finally:
        await kept.close()
    assert again == backend
    assert first != second  # autocommit: no BEGIN around the unit of work


async def test_a_failure_drops_the_connection_and_the_next_unit_reconnects(
    engine: AsyncEngine,
) -> None:
    kept = StatementConnection(engine)
    try:
        async with kept.session() as session:
            first = await session.scalar(BACKEND)
        with pytest.raises(DBAPIError):
            async with kept.session() as session:
                await session.execute(text("SELECT 1 / 0"))
        async with kept.session() as session:
            second = await session.scalar(BACKEND)
    finally:
        await kept.close()
    assert second != first


async def test_a_connection_the_server_closed_is_replaced_before_use(
    engine: AsyncEngine,
) -> None:
    kept = StatementConnection(engine)
    try:
        async with kept.session() as session:
            first = await session.scalar(BACKEND)
        # The server ends that backend while it sits idle, as a restart would.
        async with engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await asyncio.sleep(0.2)  # the closed socket is seen
        async with kept.session() as session:  # no failed statement first
            second = await session.scalar(BACKEND)
    finally:
        await kept.close()
    assert second != first


async def test_a_claim_connection_does_not_wait_for_the_disk_and_stays_out_of_the_pool(
    engine: AsyncEngine,
) -> None:
    kept = StatementConnection(engine, durable=False)
    try:
        async with kept.session() as session:
            backend = await session.scalar(BACKEND)
            setting = await session.scalar(text("SHOW synchronous_commit"))
    finally:
        await kept.close()
    assert setting == "off"

    async def gone() -> bool:
        async with engine.connect() as other:
            alive = await other.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            )
        return bool(alive == 0)

    # Closed, not pooled: no later user of the pool gets its setting.
    await eventually(gone)
    async with engine.connect() as other:
        assert await other.scalar(text("SHOW synchronous_commit")) == "on"
