"""activity: what each worker process did every few seconds, for the dashboard's overview
(polls, task outcomes, deliveries, detection gap and delivery latency buckets), kept a day.

Revision ID: 4cb6b1c7b5f4
Revises: 8b2f5d0c7e14
Create Date: 2026-12-04 08:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4cb6b1c7b5f4"
down_revision: str | None = "8b2f5d0c7e14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("process", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("polls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("poll_errors", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("succeeded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivered", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivery_retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivery_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "detection_gap",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "delivery_latency",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
    )
    op.create_index("ix_activity_at", "activity", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_activity_at", table_name="activity")
    op.drop_table("activity")
