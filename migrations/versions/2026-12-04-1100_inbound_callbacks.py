"""Provider callbacks as hints: inbound_callbacks (verified messages, for replay refusal),
ix_tasks_active_external (an instance's active tasks by upstream id, every tenant's) and
tasks.poll_again (a callback came while a poll was in flight).

Revision ID: 5e1a9d3c7b62
Revises: 4cb6b1c7b5f4
Create Date: 2026-12-04 11:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e1a9d3c7b62"
down_revision: str | None = "4cb6b1c7b5f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_callbacks",
        sa.Column("instance", sa.Text(), nullable=False),
        sa.Column("message_key", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("instance", "message_key", name=op.f("pk_inbound_callbacks")),
    )
    op.create_index("ix_inbound_callbacks_received", "inbound_callbacks", ["received_at"])
    op.add_column(
        "tasks",
        sa.Column("poll_again", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_index(
        "ix_tasks_active_external",
        "tasks",
        ["provider", "external_id"],
        postgresql_where=sa.text("status IN ('pending', 'queued', 'processing')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_active_external", table_name="tasks")
    op.drop_column("tasks", "poll_again")
    op.drop_index("ix_inbound_callbacks_received", table_name="inbound_callbacks")
    op.drop_table("inbound_callbacks")
