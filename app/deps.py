"""Annotated dependency aliases every endpoint shares: the process state, the request's
session (its unit of work), the settings and the authenticated tenant. Each domain's
endpoints build their own service from these; nothing here knows a domain.

Every dependency is `async def`: FastAPI runs plain `def` ones in a thread pool, three thread
hops per request for what are attribute reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import authenticate
from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.rate_limit import retry_after_header
from app.state import AppState


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.pollhook
    return state


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


async def get_statement_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session whose every statement commits on its own, for endpoints whose whole write
    is one statement (registration): it costs one round trip, with no BEGIN and COMMIT
    around it. The statement has committed when it returns, before the response is sent."""
    async with state.statement_sessions() as session:
        yield session


StatementSessionDep = Annotated[AsyncSession, Depends(get_statement_session, scope="function")]


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


async def get_statement_caller(
    request: Request,
    state: StateDep,
    session: StatementSessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The tenant, authenticated through the statement session (a key that is not a static
    one is looked up on the same connection) but not yet counted against its rate limit:
    for an endpoint whose cost depends on its body, which calls `charge` itself."""
    return await _authenticate(request, state, session, authorization)


StatementCallerDep = Annotated[str, Depends(get_statement_caller)]


async def get_statement_tenant(state: StateDep, tenant: StatementCallerDep) -> str:
    """`get_tenant` for the endpoints on a statement session."""
    charge(state, tenant, 1)
    return tenant


StatementTenantDep = Annotated[str, Depends(get_statement_tenant)]


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
