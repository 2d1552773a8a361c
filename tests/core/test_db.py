"""The pool after the database dropped its connections (a restart, a kill), on a real
Postgres: the next checkout gets a live connection."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.core.db import create_engine


async def test_connections_the_server_closed_are_never_handed_out(database_url: str) -> None:
    engine: AsyncEngine = create_engine(database_url, pool_size=3)
    try:
        pids = set()
        async with engine.connect() as a, engine.connect() as b:
            for conn in (a, b):
                pids.add(await conn.scalar(text("SELECT pg_backend_pid()")))
        admin_engine = create_async_engine(database_url, poolclass=NullPool)
        async with admin_engine.begin() as admin:
            await admin.execute(
                text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) pid"),
                {"pids": list(pids)},
            )
        await admin_engine.dispose()
        await asyncio.sleep(0.2)  # the terminated sockets close
        for _ in range(3):
            async with engine.connect() as conn:
                pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            assert pid not in pids
    finally:
        await engine.dispose()
