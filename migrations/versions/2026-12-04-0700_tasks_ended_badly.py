"""ix_tasks_ended_badly: one tenant's failed, expired, timed-out or cancelled tasks by status,
newest first (the dashboard's and GET /v1/tasks's status filter when few tasks match).

Revision ID: 9b3c5d7e1f20
Revises: 7a2f9c3e1b48
Create Date: 2026-12-04 07:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b3c5d7e1f20"
down_revision: str | None = "7a2f9c3e1b48"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_ended_badly",
        "tasks",
        ["tenant", "status", sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("status IN ('failed', 'expired', 'timed_out', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_ended_badly", table_name="tasks")
