from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.config import ProviderKind
from app.models import ProviderHealth


class ProviderRead(BaseModel):
    name: str = Field(examples=["minimax"])
    kind: ProviderKind
    base_url: str
    configured_rate_per_s: float = Field(description="The configured budget; 0 means unlimited.")
    effective_rate_per_s: float = Field(
        description="The rate in force now: lower than configured after rate-limit answers, "
        "climbing back gradually."
    )
    due_backlog: int = Field(description="Active tasks whose next poll is due now.")
    health: ProviderHealth
    paused_until: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class ProviderList(BaseModel):
    items: list[ProviderRead]
