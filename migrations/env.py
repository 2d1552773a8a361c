"""Alembic environment (async).

Called two ways: by `app.core.migrate` with an open connection in
`config.attributes["connection"]` (the service and the tests), or by the `alembic` CLI, which
takes the URL from `config.attributes["url"]` or from POLLHOOK_DATABASE_URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.core.db import Base
from app.core.migrate import MIGRATION_LOCK_ID

config = context.config
target_metadata = Base.metadata


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        # Replicas starting together must not run the same migration twice.
        context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def _url_from_settings() -> str:
    from app.core.config import load_settings

    settings = load_settings()
    if settings.database_url is None:
        raise SystemExit("set POLLHOOK_DATABASE_URL (or use `pollhook migrate`)")
    return settings.database_url.get_secret_value()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

existing = config.attributes.get("connection")
if existing is not None:
    do_run_migrations(existing)
else:
    asyncio.run(run_async_migrations(config.attributes.get("url") or _url_from_settings()))
