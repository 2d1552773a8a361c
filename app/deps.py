"""Annotated dependency aliases every endpoint shares: the process state, the request's
session (its unit of work), the settings and the authenticated tenant. Each domain's
endpoints build their own service from these; nothing here knows a domain.

Every dependency is `async def`: FastAPI runs plain `def` ones in a thread pool, three thread
hops per request for what are attribute reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import authenticate
from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.rate_limit import retry_after_header
from app.state import AppState


def _state_of(request: Request) -> AppState:
    state: AppState = request.app.state.pollhook
    return state


async def get_state(request: Request) -> AppState:
    return _state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the endpoint returns, before the response
    is sent (scope="function"), rolled back when it raises."""
    async with state.sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_tenant(
    request: Request,
    state: StateDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    tenant = await _authenticate(request, state, session, authorization)
    # After authentication: the limit is per tenant, and an unknown key is a 401 whatever
    # its rate. Health and metrics take no tenant, so they are never limited.
    charge(state, tenant, 1)
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


@dataclass(frozen=True)
class StatementCall:
    """An authenticated request on a statement session: a session whose every statement
    commits on its own, for endpoints whose whole write is one statement (registration).
    It costs one round trip, with no BEGIN and COMMIT around it, and the statement has
    committed when it returns, before the response is sent. A key that is not a static one
    is looked up on the same connection.

    Resolved as one dependency rather than a chain (state, session, tenant): each resolution
    costs the framework more CPU than these take, and a single registration is mostly such
    per-request costs."""

    state: AppState
    session: AsyncSession
    tenant: str


@asynccontextmanager
async def _statement_call(
    request: Request, authorization: str | None
) -> AsyncIterator[StatementCall]:
    state = _state_of(request)
    async with state.statement_sessions() as session:
        tenant = await _authenticate(request, state, session, authorization)
        yield StatementCall(state, session, tenant)


async def get_statement_caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AsyncIterator[StatementCall]:
    """The tenant on a statement session, not yet counted against its rate limit: for an
    endpoint whose cost depends on its body, which calls `charge` itself."""
    async with _statement_call(request, authorization) as call:
        yield call


StatementCallerDep = Annotated[StatementCall, Depends(get_statement_caller, scope="function")]


async def get_statement_tenant(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AsyncIterator[StatementCall]:
    """`get_tenant` for the endpoints on a statement session: counted as one request."""
    async with _statement_call(request, authorization) as call:
        charge(call.state, call.tenant, 1)
        yield call


StatementTenantDep = Annotated[StatementCall, Depends(get_statement_tenant, scope="function")]


async def _authenticate(
    request: Request, state: AppState, session: AsyncSession, authorization: str | None
) -> str:
    tenant = await authenticate(session, state.static_keys, authorization)
    request.state.tenant = tenant
    return tenant


def charge(state: AppState, tenant: str, requests: int) -> None:
    """Count `requests` (one request worth that many) against the tenant's API rate limit,
    or raise 429."""
    wait_s = state.rate_limiter.acquire(tenant, requests)
    if wait_s > 0:
        retry_after_s = retry_after_header(wait_s)
        raise TooManyRequests(
            f"too many requests for this tenant; retry in {retry_after_s} s", retry_after_s
        )
