"""Declarative base, engine and session factories."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(url: str | URL, *, pool_size: int = 10, durable: bool = True) -> AsyncEngine:
    """`durable=False` is for statements whose loss in a server crash only repeats work (a
    delivery's claim: the delivery falls due again and is sent again, which at-least-once
    delivery allows): their commits do not wait for the WAL to reach the disk
    (`synchronous_commit = off`), which under I/O or CPU pressure is most of a claim's round
    trip. They are visible to other sessions at once all the same, and a later durable
    commit flushes them with its own WAL. The setting is made as each connection opens, so
    every connection of such an engine's pool has it, stays pooled with it, and no other
    engine's pool ever gets one. It is a `SET`, not a startup parameter: PgBouncer refuses
    startup parameters it does not know, and docs/deploy.md puts it in front of Postgres."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 30},
    )
    event.listen(engine.sync_engine.pool, "checkout", _replace_if_closed)
    if not durable:
        event.listen(engine.sync_engine, "connect", _commit_without_flush)
    return engine


def _commit_without_flush(dbapi_connection: Any, _record: object) -> None:
    # On the driver's connection itself: through the DB-API cursor it would run in a
    # transaction, which the pool rolls back, and the setting with it.
    dbapi_connection.run_async(lambda conn: conn.execute("SET synchronous_commit = off"))


def _replace_if_closed(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    """A restarted or lost database leaves dead connections in the pool: the server (or the
    kernel) closed their sockets, which the driver has seen while they sat idle. Replace such
    a connection on checkout, so the first request after recovery succeeds instead of failing
    once. A ping (pool_pre_ping) would also catch a peer that vanished without closing, but
    costs BEGIN, a query and ROLLBACK, three round trips, on every checkout; such a
    connection fails its first statement instead, and SQLAlchemy then replaces every
    connection of the pool that is older than the failure."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A unit of work for code that is not a request (CLI, jobs): commit or roll back."""
    async with sessions.begin() as session:
        yield session


class StatementConnection:
    """One connection kept for units of work that are a single statement each, in autocommit
    (the statement is its own transaction): one round trip per unit, where a pooled session
    adds BEGIN and COMMIT around it. A connection the server closed (a restart) is replaced
    before use, and a failure drops the connection, the next unit opening a new one through
    the pool: only a peer that vanished without closing costs a failed statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.conn: AsyncConnection | None = None
        self.lock = asyncio.Lock()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.lock:
            if self.conn is not None and await _closed(self.conn):
                # The server closed it while it sat idle (a restart): the pool's check on
                # checkout never sees a kept connection, so it is made here.
                await self.close(invalidate=True)
            if self.conn is None:
                conn = await self.engine.connect()
                self.conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                async with AsyncSession(bind=self.conn) as session:
                    yield session
            except BaseException:
                await self.close(invalidate=True)
                raise

    async def close(self, *, invalidate: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if invalidate:
                    await conn.invalidate()
                await conn.close()


async def _closed(conn: AsyncConnection) -> bool:
    raw = await conn.get_raw_connection()
    return bool(raw.driver_connection is None or raw.driver_connection.is_closed())


async def ping(engine: AsyncEngine, timeout_s: float = 2.0) -> None:
    """Raise unless the database answers within `timeout_s`."""

    async def _select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    await asyncio.wait_for(_select_one(), timeout_s)


# What a server's refusal at connect time means, keyed by asyncpg's class for its SQLSTATE.
_REFUSALS: dict[type[asyncpg.PostgresError], str] = {
    asyncpg.InvalidCatalogNameError: "create it, or name an existing database in the URL",
    asyncpg.InvalidAuthorizationSpecificationError: "check the user name in the URL",
    asyncpg.InvalidPasswordError: "check the password in the URL",
}


def describe_connect_error(exc: BaseException, url: str, source: str) -> str | None:
    """One line saying why the database at `url` (configured by `source`) cannot be reached,
    or None when `exc` is not a failure to connect. Never includes the password."""
    cause = _connect_failure(exc)
    if cause is None:
        return None
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "localhost"
    where = f"{host}:{parsed.port or parsed.query.get('port') or 5432}/{parsed.database or ''}"
    if isinstance(cause, asyncpg.PostgresError):
        reason = str(cause)
        hint = next((h for kind, h in _REFUSALS.items() if isinstance(cause, kind)), None)
        if hint:
            reason += f" ({hint})"
    elif isinstance(cause, ConnectionRefusedError):
        reason = "connection refused (is Postgres running and listening there?)"
    elif isinstance(cause, socket.gaierror):
        reason = f"cannot resolve the host {host!r}"
    elif isinstance(cause, TimeoutError):
        reason = "no answer in time"
    else:
        reason = cause.strerror or str(cause) or type(cause).__name__
    return f"cannot connect to the database at {where} ({source}): {reason}"


def _connect_failure(exc: BaseException) -> asyncpg.PostgresError | OSError | None:
    """The asyncpg or socket error under SQLAlchemy's wrapping, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, asyncpg.PostgresError | OSError):
            return seen
        seen = seen.__cause__
    return None
