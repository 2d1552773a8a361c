"""StatementConnection on real Postgres: one kept connection, each statement its own
transaction; a failure drops the connection so the next unit of work gets a new one, and a
connection the server closed is replaced before it is used."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import StatementConnection, create_engine

BACKEND = text("SELECT pg_backend_pid()")
TRANSACTION = text("SELECT txid_current()")
SYNCHRONOUS_COMMIT = text("SHOW synchronous_commit")


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


async def test_a_claim_connection_does_not_wait_for_the_disk_and_goes_back_to_its_pool(
    engine: AsyncEngine,
) -> None:
    claim_engine = create_engine(engine.url, pool_size=1, durable=False)
    kept = StatementConnection(claim_engine)
    try:
        async with kept.session() as session:
            backend = await session.scalar(BACKEND)
            setting = await session.scalar(SYNCHRONOUS_COMMIT)
        await kept.close()
        async with kept.session() as session:
            again = await session.scalar(BACKEND)
            setting_again = await session.scalar(SYNCHRONOUS_COMMIT)
    finally:
        await kept.close()
        await claim_engine.dispose()
    assert setting == setting_again == "off"
    assert again == backend  # pooled, with the setting it was made with
    async with engine.connect() as other:
        assert await other.scalar(SYNCHRONOUS_COMMIT) == "on"
