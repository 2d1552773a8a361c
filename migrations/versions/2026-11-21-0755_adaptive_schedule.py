"""Adaptive schedule: learned completion times, planned intervals and saturation.

Revision ID: 0da51f4b86aa
Revises: 6566fbef426d
Create Date: 2026-11-21 07:55:49.828440+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0da51f4b86aa"
down_revision: str | None = "6566fbef426d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "completion_profiles",
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("size_class", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("quantiles", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column(
            "refreshed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider", "size_class", name=op.f("pk_completion_profiles")),
    )
    op.create_table(
        "completion_samples",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("size_class", sa.SmallInteger(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column(
            "observed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_completion_samples")),
    )
    op.create_index(
        "ix_completion_samples_provider_class",
        "completion_samples",
        ["provider", "size_class", "id"],
        unique=False,
    )
    op.add_column("provider_state", sa.Column("poll_demand_per_s", sa.Float(), nullable=True))
    op.add_column("provider_state", sa.Column("poll_capacity_per_s", sa.Float(), nullable=True))
    op.add_column("provider_state", sa.Column("poll_stretch", sa.Float(), nullable=True))
    op.add_column("provider_state", sa.Column("active_tasks", sa.Integer(), nullable=True))
    op.add_column(
        "provider_state", sa.Column("expected_detection_delay_s", sa.Float(), nullable=True)
    )
    op.add_column(
        "provider_state", sa.Column("saturated_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "provider_state", sa.Column("forecast_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("tasks", sa.Column("size_hint", sa.BigInteger(), nullable=True))
    op.add_column(
        "tasks", sa.Column("estimated_ready_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("tasks", sa.Column("poll_interval_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "poll_interval_s")
    op.drop_column("tasks", "estimated_ready_at")
    op.drop_column("tasks", "size_hint")
    op.drop_column("provider_state", "forecast_at")
    op.drop_column("provider_state", "saturated_since")
    op.drop_column("provider_state", "expected_detection_delay_s")
    op.drop_column("provider_state", "active_tasks")
    op.drop_column("provider_state", "poll_stretch")
    op.drop_column("provider_state", "poll_capacity_per_s")
    op.drop_column("provider_state", "poll_demand_per_s")
    op.drop_index("ix_completion_samples_provider_class", table_name="completion_samples")
    op.drop_table("completion_samples")
    op.drop_table("completion_profiles")
