"""task_polls: each task's last polls, for its timeline (GET /v1/tasks/{id}/polls, the
dashboard's task page).

Revision ID: 7a2f9c3e1b48
Revises: 6d1e4b7a2c91
Create Date: 2026-12-04 06:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7a2f9c3e1b48"
down_revision: str | None = "6d1e4b7a2c91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_polls",
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("entries", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_polls_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_polls")),
    )


def downgrade() -> None:
    op.drop_table("task_polls")
