from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint, Float, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models._types import CreatedAt, Timestamp, enum_check


class ProviderHealth(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    AUTH_FAILED = "auth_failed"


class ProviderState(Base):
    """Shared per-instance state: the rate budget (GCRA) and health, one row per instance.

    Every replica reserves send slots on this row with the database clock, so the
    configured rate holds however many replicas run.
    """

    __tablename__ = "provider_state"
    __table_args__ = (
        CheckConstraint(enum_check("health", [h.value for h in ProviderHealth]), name="health"),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    # GCRA theoretical arrival time: the earliest instant the next request may be sent.
    next_slot_at: Mapped[Timestamp | None]
    # How much later than the slack the replica that took the slots up to next_slot_at may
    # send them: another replica's next reservation starts this much after them.
    run_late_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    # AIMD: the rate right after the last rate-limit answer, and when that was; the
    # effective rate climbs back linearly from there (computed, never stored per request).
    effective_rate_per_s: Mapped[float | None] = mapped_column(Float)
    rate_cut_at: Mapped[Timestamp | None]
    # Which upstream key the health refers to: a restart with another key clears auth_failed.
    key_fingerprint: Mapped[str | None] = mapped_column(Text)
    paused_until: Mapped[Timestamp | None]
    health: Mapped[str] = mapped_column(Text, server_default=text("'ok'"))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[Timestamp | None]
    # The schedule's forecast, refreshed every engine.model_refresh_s by one replica: the
    # polls per second the plans ask for at the instance's own hit chance, the hit chance
    # that fits them into the budget, the detection delay to expect, and since when
    # demand has exceeded the rate.
    poll_demand_per_s: Mapped[float | None] = mapped_column(Float)
    # Polls per second the budget can give (app/budget/capacity.py poll_capacity): the
    # ratio's denominator.
    poll_capacity_per_s: Mapped[float | None] = mapped_column(Float)
    poll_hit_chance: Mapped[float | None] = mapped_column(Float)
    # Written by the previous version's forecast (a stretch factor); kept so its replicas
    # keep working through a rolling upgrade, and dropped by a later migration.
    poll_stretch: Mapped[float | None] = mapped_column(Float)
    active_tasks: Mapped[int | None] = mapped_column(Integer)
    # The instance's active tasks per status, counted by the same scan: what /metrics shows,
    # so a scrape reads this row instead of counting the tasks.
    tasks_by_status: Mapped[dict[str, int] | None] = mapped_column(JSONB)
    expected_detection_delay_s: Mapped[float | None] = mapped_column(Float)
    saturated_since: Mapped[Timestamp | None]
    forecast_at: Mapped[Timestamp | None]
    updated_at: Mapped[CreatedAt]
