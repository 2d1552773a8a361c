from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import PollSchedule, ProviderKind
from app.models import ProviderHealth
from app.schedule.plans import MAX_HIT_CHANCE


class CompletionTimes(BaseModel):
    """What the instance has learned of its tasks' completion times (seconds from
    registration until the upstream finished)."""

    samples: int = Field(description="Recent completions the distribution is built from.")
    p50_s: float
    p90_s: float


class Saturation(BaseModel):
    poll_demand_per_s: float = Field(
        description="Status polls per second the schedule asks for in the long run at the "
        "instance's own poll_hit_chance: per kind of task (size class), the rate such tasks "
        "finish times the polls one task's plan costs. Until the instance has learned its "
        "completion times: what the active tasks' planned intervals ask for now."
    )
    poll_capacity_per_s: float = Field(
        description="Polls per second the budget can give: the effective rate less the "
        "budget's 5 % spacing margin and the follow-up requests of completions (MiniMax's "
        "file retrieve). 0 for an unlimited instance."
    )
    ratio: float = Field(description="Demand over capacity; above 1: saturated.")
    saturated_since: datetime | None = Field(
        description="Since when demand has exceeded capacity; null when it fits. "
        "Registrations still succeed while saturated; detection just gets slower."
    )
    hit_chance: float = Field(
        description="The hit chance adaptive plans use now: the instance's poll_hit_chance, "
        f"or higher (at most {MAX_HIT_CHANCE:g}, or the instance's own if that is higher) when "
        "the budget calls for fewer, later, likelier polls."
    )
    active_tasks: int
    tasks_by_status: dict[str, int] | None = Field(
        description="The active tasks by status (pending, queued, processing) as the forecast "
        "counted them; null from a forecast of an earlier version."
    )
    expected_detection_delay_s: float | None = Field(
        description="Expected time from a task finishing upstream to pollhook knowing: the "
        "mean over the plans in force, by completion rate, plus the queue's wait when even "
        "the highest hit chance asks for more than the capacity."
    )


OPERATORS_ONLY = "Operators only: null for a tenant's key."


class ProviderRead(BaseModel):
    """A provider instance. A tenant's key sees the instance's health and its own active
    tasks there; the instance's address, budget and totals are for operators."""

    name: str = Field(examples=["minimax"])
    kind: ProviderKind
    health: ProviderHealth
    paused_until: datetime | None
    completion: CompletionTimes | None = Field(
        description="Null until the instance has seen enough completions to learn from."
    )
    your_active_tasks: dict[str, int] = Field(
        description="The calling tenant's tasks on this instance that are still tracked, by "
        "status (pending, queued, processing); empty for an operator's key."
    )
    callbacks: bool = Field(
        description="Whether the instance takes its provider's callbacks at "
        "`POST /v1/inbound/{name}` (its polls are then spaced wider: a safety net)."
    )
    callback_url: str | None = Field(
        description="The URL to hand the provider for its callbacks (it may hold the "
        "instance's secret token); null while the instance takes none. Operators who may "
        "change things only: null for a read-only operator's or a tenant's key."
    )
    base_url: str | None = Field(description=OPERATORS_ONLY)
    configured_rate_per_s: float | None = Field(
        description=f"The configured budget; 0 means unlimited. {OPERATORS_ONLY}"
    )
    effective_rate_per_s: float | None = Field(
        description="The rate in force now: lower than configured after rate-limit answers, "
        f"climbing back gradually. {OPERATORS_ONLY}"
    )
    due_backlog: int | None = Field(
        description=f"Active tasks (every tenant's) whose next poll is due now. {OPERATORS_ONLY}"
    )
    schedule: PollSchedule | None = Field(description=OPERATORS_ONLY)
    saturation: Saturation | None = Field(
        description="Null until a worker has made the instance's first forecast, and for a "
        "tenant's key."
    )
    last_error: str | None = Field(description=OPERATORS_ONLY)
    last_error_at: datetime | None = Field(description=OPERATORS_ONLY)


class ProviderList(BaseModel):
    items: list[ProviderRead]


MAX_PAUSE_S = 7 * 86400


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    for_s: float = Field(
        3600,
        gt=0,
        le=MAX_PAUSE_S,
        description="How long to pause, in seconds (at most 7 days). A longer pause already "
        "in force (after a rate-limit or credential answer) stands.",
    )
