from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class AuditRead(BaseModel):
    id: uuid.UUID
    at: datetime
    actor: str = Field(
        description="Who: `tenant:<name>` or `operator:<name>`.", examples=["operator:alice"]
    )
    role: Literal["tenant", "operator", "operator_read"]
    action: str = Field(
        description="What, e.g. `delivery.retry`, `delivery.bulk_retry`, `webhook.update`, "
        "`webhook.rotate_secret`, `provider.pause`.",
        examples=["delivery.retry"],
    )
    target: str = Field(
        description="On what: `delivery:<id>`, `webhook:<id>`, `task:<id>`, `provider:<name>`, "
        "or the filter of a bulk action.",
        examples=["delivery:3f0c5e1a-8d5b-4c50-9d59-51a3b1f4e0a7"],
    )
    tenant: str | None = Field(description="Whose object it was; null for a provider instance.")
    result: Literal["ok", "denied"] = Field(
        description="`ok`: the change was made. `denied`: the key may not make changes."
    )
    details: dict[str, Any]


class AuditList(BaseModel):
    items: list[AuditRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
