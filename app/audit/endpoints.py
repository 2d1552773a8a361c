from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.audit.schemas import AuditList
from app.audit.service import AuditLog
from app.core.schemas import error_responses
from app.deps import OperatorDep, SessionDep

router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    summary="The audit log, newest first (operators only)",
    responses=error_responses(401, 403, 422, 503),
)
async def list_audit(
    _: OperatorDep,
    session: SessionDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditList:
    return await AuditLog(session).page(
        limit=limit, cursor=cursor, tenant=tenant, actor=actor, action=action
    )
