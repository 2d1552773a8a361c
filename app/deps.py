"""Annotated dependency aliases every endpoint shares: the process state, the request's
session (its unit of work), the settings and the authenticated caller. Each domain's
endpoints build their own service from these; nothing here knows a domain.

Every dependency is `async def`: FastAPI runs plain `def` ones in a thread pool, three thread
hops per request for what are attribute reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Change, permit
from app.auth.service import Caller, authenticate
from app.core.config import Settings
from app.core.errors import Forbidden, TooManyRequests
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


async def get_caller(
    request: Request,
    state: StateDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    caller = await _authenticate(request, state, session, authorization)
    # After authentication: the limit is per caller, and an unknown key is a 401 whatever
    # its rate. Health and metrics take no caller, so they are never limited.
    charge(state, caller.actor, 1)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_tenant(caller: CallerDep) -> str:
    """The tenant a route acts for, when it makes or reads what only a tenant has (its tasks'
    registration, its new endpoints, its signing secret)."""
    return tenant_of(caller)


TenantDep = Annotated[str, Depends(get_tenant)]


async def get_operator(caller: CallerDep) -> Caller:
    if not caller.is_operator:
        raise Forbidden("this route is for operators: call it with a key from POLLHOOK_ADMIN_KEYS")
    return caller


OperatorDep = Annotated[Caller, Depends(get_operator)]


def changes(action: str) -> Any:
    """The dependency of a route that changes something: the `Change` it makes, or a 403
    (recorded in the audit log) for a read-only key. `action` names the change there."""

    async def dependency(request: Request, caller: CallerDep, state: StateDep) -> Change:
        return await permit(state.sessions, caller, action, target=request.url.path)

    return Depends(dependency)


def tenant_of(caller: Caller) -> str:
    if caller.tenant is None:
        raise Forbidden(
            "this route acts for one tenant: call it with the tenant's key, not an operator's"
        )
    return caller.tenant


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
    # Caller.actor, the rate limit's key.
    actor: str


@asynccontextmanager
async def _statement_call(
    request: Request, authorization: str | None
) -> AsyncIterator[StatementCall]:
    state = _state_of(request)
    async with state.statement_sessions() as session:
        caller = await _authenticate(request, state, session, authorization)
        yield StatementCall(state, session, tenant_of(caller), caller.actor)


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
        charge(call.state, call.actor, 1)
        yield call


StatementTenantDep = Annotated[StatementCall, Depends(get_statement_tenant, scope="function")]


async def _authenticate(
    request: Request, state: AppState, session: AsyncSession, authorization: str | None
) -> Caller:
    caller = await authenticate(session, state.static_keys, authorization)
    request.state.tenant = caller.tenant or caller.actor
    return caller


def charge(state: AppState, actor: str, requests: int) -> None:
    """Count `requests` (one request worth that many) against the caller's API rate limit
    (by `Caller.actor`), or raise 429."""
    wait_s = state.rate_limiter.acquire(actor, requests)
    if wait_s > 0:
        retry_after_s = retry_after_header(wait_s)
        raise TooManyRequests(
            f"too many requests for this key; retry in {retry_after_s} s", retry_after_s
        )
